/**
 * Issue 4's acceptance, end to end with real containerd, runc, a real
 * registry and the lazypull snapshotter daemon as containerd's proxy plugin:
 * an eStargz image starts with `ctr run --snapshotter lazypull` and through
 * the CRI (PullImage, RunPodSandbox, CreateContainer, StartContainer) while
 * only a small share of it is fetched.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listMounts } from '../src/fs/fuse-mount';
import { startCriEnvironment, type CriEnvironment } from '../src/sandbox/cri-environment';
import { startLocalSnapshotter, type LocalSnapshotter } from '../src/sandbox/local-snapshotter';
import { runCliOk } from './support/cli';
import { startContainerd, type Containerd } from './support/containerd-fixture';
import { buildOciLayout, busyboxLayer, HELLO_TEXT, pseudoRandomBytes } from './support/oci-image';
import { startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireBinary, requireFuse, requireRoot } from './support/require-env';

/** A busybox image whose app layer carries 16 MiB the container never reads. */
async function buildImage(dir: string): Promise<void> {
  await buildOciLayout(dir, {
    layers: [
      { entries: await busyboxLayer() },
      {
        entries: [
          { type: 'dir', path: 'app', mode: 0o755 },
          { type: 'file', path: 'app/hello.txt', content: HELLO_TEXT },
          { type: 'file', path: 'app/unused-1.bin', content: pseudoRandomBytes(8 << 20, 7) },
          { type: 'file', path: 'app/unused-2.bin', content: pseudoRandomBytes(8 << 20, 8) },
        ],
      },
    ],
    config: { cmd: ['/bin/sh', '-c', 'cat /app/hello.txt; trap "exit 0" TERM; while true; do sleep 1 & wait $!; done'] },
    tag: 'v1',
  });
}

/** Fetched and total bytes over the lazily served layers, from status files written after `since`. */
async function fetchedShare(snapshotter: LocalSnapshotter, since: number): Promise<{ fetched: number; total: number; layers: number }> {
  let statuses = await snapshotter.mountStatuses();
  const deadline = Date.now() + 10_000;
  // Layer servers rewrite their status every second.
  while (statuses.some((s) => Date.parse(s.updatedAt) <= since) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    statuses = await snapshotter.mountStatuses();
  }
  return {
    fetched: statuses.reduce((sum, s) => sum + s.fetchedBytes, 0),
    total: statuses.reduce((sum, s) => sum + s.blobSize, 0),
    layers: statuses.length,
  };
}

async function noMountsLeft(dir: string): Promise<void> {
  const left = (await listMounts()).filter((m) => m.mountpoint.startsWith(dir));
  assert.deepEqual(left, [], 'no FUSE mount left');
}

describe('containers start lazily from eStargz images', function () {
  this.timeout(240_000);

  describe('with ctr and lazypull pull', function () {
    let dir: string;
    let registry: RegistryFixture | undefined;
    let snapshotter: LocalSnapshotter | undefined;
    let containerd: Containerd | undefined;

    before(async function () {
      requireRoot(this);
      requireFuse(this);
      for (const bin of ['containerd', 'ctr', 'runc', 'docker-registry']) requireBinary(this, bin);
      dir = await mkdtemp(join(tmpdir(), 'lzp-e2e-lazy-'));
      registry = await startRegistry();
      snapshotter = await startLocalSnapshotter({ dir, plainHttpRegistries: [registry.host], backgroundFetch: false });
      containerd = await startContainerd({ proxySnapshotters: { lazypull: snapshotter.socket } });
      await buildImage(join(dir, 'oci'));
    });

    after(async function () {
      await containerd?.stop();
      await snapshotter?.stop();
      await registry?.stop();
      if (dir) {
        await noMountsLeft(dir);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('runs the container while fetching a small share of the image', async function () {
      const ref = `${registry!.host}/e2e/lazy:v1`;
      await runCliOk(['convert', `oci:${join(dir, 'oci')}:v1`, ref, '--plain-http', '--level', '1']);
      const pulled = JSON.parse((await runCliOk(['pull', ref, '--address', containerd!.address, '--namespace', containerd!.namespace, '--plain-http', '--json'])).stdout);
      assert.ok(pulled.layers.every((l: { mode: string }) => l.mode === 'lazy'), JSON.stringify(pulled.layers));
      const run = await containerd!.ctr(['run', '--rm', '--snapshotter', 'lazypull', '--runc-root', containerd!.runcRoot, ref, 'lazy-1', '/bin/cat', '/app/hello.txt']);
      assert.equal(run.stdout, HELLO_TEXT);
      const share = await fetchedShare(snapshotter!, Date.now());
      assert.ok(share.fetched > 500_000, `the busybox binary the container ran was fetched (${share.fetched} bytes)`);
      assert.equal(share.layers, 2);
      assert.ok(share.total > 16 << 20);
      assert.ok(share.fetched / share.total < 0.2, `fetched ${share.fetched} of ${share.total} bytes`);
      console.log(`      fetched ${(share.fetched / 1024).toFixed(0)} KiB of ${(share.total / 1024).toFixed(0)} KiB (${((100 * share.fetched) / share.total).toFixed(1)}%)`);
    });

    it('keeps a running container reading across kill -9 of the daemon, and starts new ones after its restart', async function () {
      const ref = `${registry!.host}/e2e/lazy:v1`;
      const c = containerd!;
      await c.ctr(['run', '-d', '--snapshotter', 'lazypull', '--runc-root', c.runcRoot, ref, 'reader']);
      const read = async (path: string): Promise<string> => (await c.ctr(['task', 'exec', '--exec-id', `x${Date.now()}`, 'reader', '/bin/sha256sum', path])).stdout.split(' ')[0];
      const before = await read('/app/unused-1.bin');
      await snapshotter!.kill();
      // The daemon is gone; the layer servers are not: unread data still comes from the registry.
      const during = await read('/app/unused-2.bin');
      assert.match(during, /^[0-9a-f]{64}$/);
      await snapshotter!.restart();
      assert.equal(await read('/app/unused-1.bin'), before);
      // containerd reconnects to the proxy socket with a backoff of a few seconds, as a kubelet's retry would.
      let fresh = { stdout: '', stderr: '', code: -1 };
      for (let attempt = 0; attempt < 30 && fresh.code !== 0; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, 500));
        fresh = await c.ctr(['run', '--rm', '--snapshotter', 'lazypull', '--runc-root', c.runcRoot, ref, `after-restart-${attempt}`, '/bin/cat', '/app/hello.txt'], { check: false });
      }
      assert.equal(fresh.stdout, HELLO_TEXT, fresh.stderr);
      await c.ctr(['task', 'kill', '-s', 'SIGKILL', 'reader']);
      await c.ctr(['task', 'delete', '-f', 'reader'], { check: false });
      await c.ctr(['container', 'delete', 'reader']);
    });
  });

  describe('through the CRI (containerd CRI plugin with snapshotter = "lazypull")', function () {
    let dir: string;
    let env: CriEnvironment | undefined;
    let snapshotter: LocalSnapshotter | undefined;

    before(async function () {
      requireRoot(this);
      requireFuse(this);
      for (const bin of ['containerd', 'runc', 'docker-registry', 'ip']) requireBinary(this, bin);
      dir = await mkdtemp(join(tmpdir(), 'lzp-e2e-cri-lazy-'));
      await buildImage(join(dir, 'oci'));
      env = await startCriEnvironment({
        snapshotter: 'lazypull',
        beforeContainerd: async (ctx) => {
          snapshotter = await startLocalSnapshotter({ dir, plainHttpRegistries: [ctx.registry.host], hostsDir: ctx.hostsDir, backgroundFetch: false });
          return { proxySnapshotters: { lazypull: snapshotter.socket } };
        },
      });
    });

    after(async function () {
      await env?.stop();
      await snapshotter?.stop();
      if (dir) {
        await noMountsLeft(dir);
        await rm(dir, { recursive: true, force: true });
      }
    });

    it('pulls with lazily mounted layers and runs a pod from them', async function () {
      const cri = env!.cri;
      const ref = `${env!.registry.host}/e2e/cri-lazy:v1`;
      await runCliOk(['convert', `oci:${join(dir, 'oci')}:v1`, ref, '--plain-http', '--level', '1']);
      await cri.pullImage(ref);
      const mounted = await snapshotter!.mountStatuses();
      assert.equal(mounted.length, 2, 'both layers mounted lazily by PullImage (CRI labels reached Prepare)');
      assert.ok(mounted.every((s) => s.reference.endsWith('e2e/cri-lazy:v1')));

      const podConfig = env!.podConfig('lazy-0');
      const sandboxId = await cri.runPodSandbox(podConfig);
      const containerId = await cri.createContainer(sandboxId, { metadata: { name: 'app' }, image: { image: ref } }, podConfig);
      await cri.startContainer(containerId);
      const deadline = Date.now() + 30_000;
      let state = '';
      while (Date.now() < deadline) {
        state = (await cri.containerStatus(containerId)).status?.state ?? '';
        if (state === 'CONTAINER_RUNNING') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(state, 'CONTAINER_RUNNING');
      const exec = await cri.execSync(containerId, ['cat', '/app/hello.txt'], { timeoutSec: 20 });
      assert.equal(exec.stdout.toString(), HELLO_TEXT);
      const share = await fetchedShare(snapshotter!, Date.now());
      assert.ok(share.fetched > 500_000, `the busybox binary the container ran was fetched (${share.fetched} bytes)`);
      assert.ok(share.fetched / share.total < 0.2, `fetched ${share.fetched} of ${share.total} bytes`);
      console.log(`      CRI: fetched ${(share.fetched / 1024).toFixed(0)} KiB of ${(share.total / 1024).toFixed(0)} KiB (${((100 * share.fetched) / share.total).toFixed(1)}%)`);
      await cri.stopContainer(containerId, 5);
      await cri.removeContainer(containerId);
      await cri.stopPodSandbox(sandboxId);
      await cri.removePodSandbox(sandboxId);
    });
  });
});
