/**
 * The CRI client against containerd's CRI plugin in a private CRI environment
 * (loopback registry, pause image, CNI bridge, overlayfs snapshotter): pull,
 * pod sandbox with its own IP, container, exec, and the in-place container
 * replacement the upgrade controller is built on (same sandbox and IP, new
 * container id and image reference).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { criStatus, CriClient, isCriStatus } from '../src/cri/cri-client';
import type { ContainerConfig, PodSandboxConfig } from '../src/cri/cri-types';
import { isLazypullError } from '../src/errors';
import { CNI_RESULTS_DIR } from '../src/sandbox/cni-network';
import { startCriEnvironment, type CriEnvironment } from '../src/sandbox/cri-environment';
import { buildBusyboxImage, buildOciLayout, busyboxLayer, HELLO_TEXT } from './support/oci-image';
import { requireBinary, requireRoot } from './support/require-env';

/** Writes a line, then sleeps until SIGTERM, which ends it at once. */
const SERVE = ['/bin/sh', '-c', 'trap "exit 0" TERM; echo "started $(cat /app/version.txt 2>/dev/null || echo v1)"; while true; do sleep 1 & wait $!; done'];

function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('CRI client and CRI environment (containerd CRI plugin, overlayfs)', function () {
  this.timeout(120_000);
  let env: CriEnvironment | undefined;
  let workDir: string | undefined;
  let imageV1 = '';
  let imageV2 = '';
  const timings: Record<string, number> = {};
  const sandboxIds: string[] = [];

  before(async function () {
    requireRoot(this);
    for (const bin of ['containerd', 'runc', 'docker-registry', 'skopeo', 'ip']) requireBinary(this, bin);
    workDir = await mkdtemp(join(tmpdir(), 'lzp-test-cri-'));
    let t = process.hrtime.bigint();
    env = await startCriEnvironment();
    timings.environmentStart = secondsSince(t);
    const v1Dir = join(workDir, 'v1');
    const v2Dir = join(workDir, 'v2');
    await buildBusyboxImage(v1Dir, 'v1');
    await buildOciLayout(v2Dir, {
      layers: [
        { entries: await busyboxLayer() },
        {
          entries: [
            { type: 'dir', path: 'app', mode: 0o755 },
            { type: 'file', path: 'app/hello.txt', content: HELLO_TEXT },
            { type: 'file', path: 'app/version.txt', content: 'v2\n' },
          ],
        },
      ],
      config: { cmd: ['/bin/sh', '-c', 'cat /app/hello.txt'] },
      tag: 'v2',
    });
    t = process.hrtime.bigint();
    imageV1 = await env.pushOciLayout(v1Dir, 'v1', 'test/app');
    imageV2 = await env.pushOciLayout(v2Dir, 'v2', 'test/app');
    timings.push = secondsSince(t);
  });

  after(async function () {
    const e = env;
    env = undefined;
    if (e !== undefined) {
      const { dir, network, cgroupRoot } = e;
      await e.stop();
      // Nothing of the run is left on the host.
      assert.equal(existsSync(dir), false, 'temp dir removed');
      assert.equal(existsSync(`/sys/class/net/${network.bridge}`), false, 'bridge removed');
      const cached = existsSync(CNI_RESULTS_DIR)
        ? readdirSync(CNI_RESULTS_DIR).filter((n) => n.startsWith(`${network.name}-`) || sandboxIds.some((id) => n.includes(id)))
        : [];
      assert.deepEqual(cached, [], 'go-cni cache entries removed');
      assert.equal(existsSync(join('/sys/fs/cgroup/memory', cgroupRoot)), false, 'cgroups removed');
    }
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
    if (Object.keys(timings).length > 0) {
      console.log(`      timings (s): ${Object.entries(timings).map(([k, v]) => `${k}=${v.toFixed(3)}`).join(' ')}`);
    }
  });

  it('reports the runtime version and readiness', async function () {
    assert.ok(env);
    const v = await env.cri.version();
    assert.equal(v.runtimeName, 'containerd');
    assert.equal(v.runtimeApiVersion, 'v1');
    const s = await env.cri.status();
    const types = (s.status?.conditions ?? []).filter((c) => c.status).map((c) => c.type);
    assert.ok(types.includes('RuntimeReady') && types.includes('NetworkReady'), `conditions ${JSON.stringify(s.status)}`);
  });

  it('wraps gRPC failures in LAZYPULL_ERR_CRI with the method and status', async function () {
    assert.ok(env);
    await assert.rejects(env.cri.containerStatus('does-not-exist'), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_CRI'));
      assert.equal(err.details.method, 'ContainerStatus');
      assert.equal(criStatus(err), 'NOT_FOUND');
      assert.match(err.message, /ContainerStatus.*does-not-exist.*NOT_FOUND/);
      return true;
    });
    assert.equal(await env.cri.imageStatus(`${env.registry.host}/test/none:v0`), undefined);
    // A socket where nothing listens: UNAVAILABLE (or the deadline), not a hang.
    const dead = new CriClient(`unix://${join(env.dir, 'nothing.sock')}`, { timeoutMs: 1000 });
    try {
      await assert.rejects(dead.version(), (err: unknown) => isCriStatus(err, 'UNAVAILABLE') || isCriStatus(err, 'DEADLINE_EXCEEDED'));
    } finally {
      dead.close();
    }
  });

  it('pulls, runs a pod with its own IP, and replaces its container in place', async function () {
    assert.ok(env);
    const cri = env.cri;

    let t = process.hrtime.bigint();
    const pulledRef = await cri.pullImage(imageV1);
    timings.pullV1 = secondsSince(t);
    assert.match(pulledRef, /^sha256:[0-9a-f]{64}$/);
    const image = await cri.imageStatus(imageV1);
    assert.ok(image, 'image on the node after PullImage');
    assert.equal(image.id, pulledRef);
    assert.ok(image.repoTags.includes(imageV1), `repo tags ${image.repoTags.join(',')}`);
    assert.ok((await cri.listImages()).some((i) => i.id === pulledRef));

    const sandboxConfig: PodSandboxConfig = env.podConfig('web-0', { labels: { app: 'web' } });
    t = process.hrtime.bigint();
    const sandboxId = await cri.runPodSandbox(sandboxConfig);
    sandboxIds.push(sandboxId);
    timings.sandboxStart = secondsSince(t);
    const sandbox = (await cri.podSandboxStatus(sandboxId)).status;
    assert.ok(sandbox);
    assert.equal(sandbox.state, 'SANDBOX_READY');
    assert.equal(sandbox.metadata?.name, 'web-0');
    const ip = sandbox.network?.ip ?? '';
    assert.ok(env.network.contains(ip), `pod IP ${ip} in ${env.network.subnet}`);
    assert.deepEqual(
      (await cri.listPodSandbox({ labelSelector: { app: 'web' } })).map((s) => s.id),
      [sandboxId],
    );

    const containerConfig = (img: string, attempt: number): ContainerConfig => {
      const c: ContainerConfig = {
        metadata: { name: 'app', attempt },
        image: { image: img },
        command: SERVE,
        envs: [{ key: 'POD_NAME', value: 'web-0' }],
        labels: { app: 'web' },
      };
      return { ...c, logPath: env?.containerLogPath(c) };
    };

    t = process.hrtime.bigint();
    const firstId = await cri.createContainer(sandboxId, containerConfig(imageV1, 0), sandboxConfig);
    await cri.startContainer(firstId);
    timings.containerStart = secondsSince(t);
    const first = await waitFor('first container running', async () => {
      const s = (await cri.containerStatus(firstId)).status;
      return s?.state === 'CONTAINER_RUNNING' ? s : undefined;
    });
    // ContainerStatus gives the repo digest, as runtime-setup.md says.
    assert.match(first.imageRef, new RegExp(`^${env.registry.host}/test/app@sha256:[0-9a-f]{64}$`));
    assert.ok(first.startedAt > 0);
    const exec = await cri.execSync(firstId, ['cat', '/app/hello.txt'], { timeoutSec: 10 });
    assert.equal(exec.exitCode, 0, exec.stderr.toString());
    assert.equal(exec.stdout.toString(), HELLO_TEXT);
    const failing = await cri.execSync(firstId, ['cat', '/app/missing'], { timeoutSec: 10 });
    assert.notEqual(failing.exitCode, 0);
    const log = await waitFor('container log line', async () => {
      const text = existsSync(first.logPath) ? readFileSync(first.logPath, 'utf8') : '';
      return text.includes('started v1') ? text : undefined;
    });
    assert.match(log, /stdout F started v1/);
    const listed = await cri.listContainers({ podSandboxId: sandboxId });
    assert.deepEqual(listed.map((c) => c.id), [firstId]);
    // ListContainers gives the image ID, PullImage's answer.
    assert.equal(listed[0]?.imageRef, pulledRef);

    // In-place replacement: the same sandbox, a new container from the new image.
    t = process.hrtime.bigint();
    await cri.pullImage(imageV2);
    timings.pullV2 = secondsSince(t);
    t = process.hrtime.bigint();
    await cri.stopContainer(firstId, 10);
    await cri.removeContainer(firstId);
    const secondId = await cri.createContainer(sandboxId, containerConfig(imageV2, 1), sandboxConfig);
    await cri.startContainer(secondId);
    timings.inPlaceReplace = secondsSince(t);
    assert.ok(timings.inPlaceReplace < 5, `stop returned promptly (TERM trapped): ${timings.inPlaceReplace.toFixed(2)} s`);
    const second = await waitFor('second container running', async () => {
      const s = (await cri.containerStatus(secondId)).status;
      return s?.state === 'CONTAINER_RUNNING' ? s : undefined;
    });
    assert.notEqual(secondId, firstId);
    assert.notEqual(second.imageRef, first.imageRef);
    assert.match(second.imageRef, /@sha256:/);
    assert.equal(second.metadata?.attempt, 1);
    const after = (await cri.podSandboxStatus(sandboxId)).status;
    assert.equal(after?.id, sandboxId);
    assert.equal(after?.state, 'SANDBOX_READY');
    assert.equal(after?.network?.ip, ip, 'pod IP kept across the replacement');
    const version = await cri.execSync(secondId, ['cat', '/app/version.txt']);
    assert.equal(version.stdout.toString(), 'v2\n');
    await assert.rejects(cri.containerStatus(firstId), (err: unknown) => isCriStatus(err, 'NOT_FOUND'));
    assert.deepEqual((await cri.listContainers({ podSandboxId: sandboxId, state: 'CONTAINER_RUNNING' })).map((c) => c.id), [secondId]);

    // Pod teardown; both calls are idempotent.
    await cri.stopPodSandbox(sandboxId);
    await cri.stopPodSandbox(sandboxId);
    await cri.removePodSandbox(sandboxId);
    await cri.removePodSandbox(sandboxId);
    assert.deepEqual(await cri.listPodSandbox(), []);
    assert.deepEqual(await cri.listContainers(), []);
  });

  it('a failed start removes what it had set up', async function () {
    let seen: { dir: string; bridge: string } | undefined;
    await assert.rejects(
      startCriEnvironment({
        beforeContainerd: async (ctx) => {
          seen = { dir: ctx.dir, bridge: ctx.network.bridge };
          assert.ok(existsSync(join(ctx.hostsDir, ctx.registry.host, 'hosts.toml')));
          throw new Error('snapshotter failed to start');
        },
      }),
      /snapshotter failed to start/,
    );
    assert.ok(seen);
    assert.equal(existsSync(seen.dir), false);
    assert.equal(existsSync(`/sys/class/net/${seen.bridge}`), false);
  });

  it('stop() removes pods it still finds, with their network', async function () {
    assert.ok(env);
    const config = env.podConfig('leftover');
    const id = await env.cri.runPodSandbox(config);
    sandboxIds.push(id);
    const c = await env.cri.createContainer(id, { metadata: { name: 'app' }, image: { image: imageV2 }, command: SERVE }, config);
    await env.cri.startContainer(c);
    // after() stops the environment with this pod running and checks the host is clean.
  });
});
