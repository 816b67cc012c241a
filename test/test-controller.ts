/**
 * The in-place upgrade controller end to end: `lazypull controller` in a
 * child process against real containerd with its CRI plugin, CNI bridge
 * networking and a loopback registry; CloneSets applied over its HTTP API
 * and the CLI. Issue 5's acceptance: in-place updates keep sandbox and IP and
 * leave sidecars alone, partition, maxUnavailable observed on the ready set,
 * the readiness-gate grace period, recreate vs InPlaceOnly, a missing image,
 * a never-ready new container, and kill -9 of the controller mid-rollout
 * (also inside a container replacement); labels added to pods with
 * `rollout label`, and the priority and scatter strategies on them; maxSurge.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CriPodRuntime } from '../src/controller/cri-runtime';
import type { PodTemplate, ScatterStrategy } from '../src/controller/types';
import { scatter, sortByPriority } from '../src/controller/update-order';
import type { Container } from '../src/cri/cri-types';
import { startCriEnvironment, type CriEnvironment } from '../src/sandbox/cri-environment';
import { startLocalSnapshotter, type LocalSnapshotter } from '../src/sandbox/local-snapshotter';
import { CLI_PATH, runCli, runCliOk } from './support/cli';
import {
  Api,
  buildAppImage,
  cloneSetYaml,
  killController,
  startControllerProcess,
  type ControllerProcess,
  type PodView,
  type ReadyEntry,
  type SetOptions,
  SERVE_COMMAND,
  SIDECAR_COMMAND,
} from './support/controller-fixture';
import { requireBinary, requireFuse, requireRoot } from './support/require-env';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function byName<T extends { name: string }>(xs: T[]): Map<string, T> {
  return new Map(xs.map((x) => [x.name, x]));
}

/** Pod names in natural order ("x-2" before "x-10"), as the planner's default order. */
function naturally(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The labels among `keys` that are set. */
function pick(labels: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.filter((k) => k in labels).map((k) => [k, labels[k]]));
}

function container(p: PodView, name: string): { containerId: string; imageRef: string } {
  const c = p.containers.find((x) => x.name === name);
  assert.ok(c, `pod ${p.name} has container ${name}`);
  return c;
}

/** Samples of the ready set taken every 100 ms while a rollout runs. */
class ReadyPoller {
  readonly samples: Array<{ at: number; entries: ReadyEntry[] }> = [];
  private running = true;
  private done: Promise<void>;

  constructor(api: Api, set: string) {
    this.done = (async () => {
      while (this.running) {
        const at = Date.now();
        try {
          this.samples.push({ at, entries: await api.ready(set) });
        } catch {
          // controller restarting
        }
        await sleep(Math.max(0, 100 - (Date.now() - at)));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  /** Most pods missing from the ready set (of `replicas`) in any sample. */
  maxMissing(replicas: number): number {
    return Math.max(0, ...this.samples.map((s) => replicas - s.entries.filter((e) => e.ready).length));
  }

  /**
   * When `pod` left the ready set after being ready at `revision`: the time
   * of the last request that still saw it ready (the gate closed after that
   * answer) and of the first that did not.
   */
  leftReadySet(pod: string, revision: string): { lastReady: number; firstGone: number } | undefined {
    let lastReady: number | undefined;
    for (const s of this.samples) {
      const e = s.entries.find((x) => x.name === pod);
      if (e?.ready && e.revision === revision) lastReady = s.at;
      else if (lastReady !== undefined && e !== undefined && !e.ready) return { lastReady, firstGone: s.at };
    }
    return undefined;
  }
}

describe('in-place upgrade controller (CloneSet over containerd CRI)', function () {
  this.timeout(120_000);
  let env: CriEnvironment | undefined;
  let workDir = '';
  let controller: ControllerProcess | undefined;
  let api: Api;
  let port = 0;
  let v1 = '';
  let v2 = '';
  let bad = '';
  let sidecar = '';
  const timings: Record<string, number> = {};

  const opts = (o: Partial<SetOptions> & { name: string; replicas: number }): SetOptions => ({ image: v1, sidecarImage: sidecar, ...o });
  const criContainers = async (sandboxId: string): Promise<Container[]> => (await env!.cri.listContainers({ podSandboxId: sandboxId })).filter((c) => c.metadata?.name === 'app');
  const sandboxesOf = async (set: string): Promise<string[]> => (await env!.cri.listPodSandbox({ labelSelector: { 'lazypull.io/cloneset': set } })).map((s) => s.id);
  const timed = async <T>(key: string, f: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    const out = await f();
    timings[key] = (Date.now() - t) / 1000;
    return out;
  };
  /** Pods in the order the controller logged `event` for them on the way to revision `to`. */
  const updateOrder = (set: string, event: string, to: string): string[] =>
    controller!.events().filter((e) => e.event === event && e.cloneset === set && e.to === to).map((e) => e.pod ?? '');
  /** kill -9 the controller (`whileDown` runs once it is dead), then start it again on the same state and port. */
  const restartController = async (whileDown: () => void | Promise<void> = () => undefined): Promise<void> => {
    await killController(controller!, 'SIGKILL');
    await whileDown();
    controller = await startControllerProcess(env!, join(workDir, 'state'), port);
  };
  const deleteSet = async (set: string): Promise<void> => {
    await api.delete(set);
    assert.deepEqual(await sandboxesOf(set), [], `no sandbox of ${set} left`);
    assert.equal((await api.call('GET', `/clonesets/${set}`)).status, 404);
  };

  before(async function () {
    this.timeout(180_000);
    requireRoot(this);
    for (const bin of ['containerd', 'runc', 'docker-registry', 'skopeo', 'ip']) requireBinary(this, bin);
    workDir = await mkdtemp(join(tmpdir(), 'lzp-test-controller-'));
    const t = Date.now();
    env = await startCriEnvironment();
    await Promise.all([
      buildAppImage(join(workDir, 'v1'), 'v1', 'v1'),
      buildAppImage(join(workDir, 'v2'), 'v2', 'v2'),
      buildAppImage(join(workDir, 'bad'), 'bad', undefined),
    ]);
    v1 = await env.pushOciLayout(join(workDir, 'v1'), 'v1', 'test/app');
    v2 = await env.pushOciLayout(join(workDir, 'v2'), 'v2', 'test/app');
    bad = await env.pushOciLayout(join(workDir, 'bad'), 'bad', 'test/app');
    sidecar = await env.pushOciLayout(join(workDir, 'v1'), 'v1', 'test/sidecar');
    controller = await startControllerProcess(env, join(workDir, 'state'));
    port = Number(new URL(controller.url).port);
    api = new Api(controller.url);
    timings.setup = (Date.now() - t) / 1000;
  });

  after(async function () {
    this.timeout(120_000);
    if (controller) await killController(controller);
    // LAZYPULL_TEST_CONTROLLER_LOG=FILE keeps the controller's JSON log.
    if (controller && process.env.LAZYPULL_TEST_CONTROLLER_LOG) await writeFile(process.env.LAZYPULL_TEST_CONTROLLER_LOG, controller.log());
    if (this.currentTest?.state === 'failed' && controller) console.log(controller.log().slice(-5000));
    await env?.stop();
    env = undefined;
    if (workDir) await rm(workDir, { recursive: true, force: true });
    console.log(`      timings (s): ${Object.entries(timings).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(' ')}`);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && controller) console.log(controller.log().slice(-6000));
  });

  it('rejects a malformed spec with the field named and changes nothing; unknown sets are 404', async function () {
    const bad1 = await api.call<{ error: { message: string; field: string } }>('PUT', '/clonesets', cloneSetYaml(opts({ name: 'bad', replicas: 1, maxUnavailable: 'lots' })));
    assert.equal(bad1.status, 400);
    assert.equal(bad1.body.error.field, 'spec.updateStrategy.maxUnavailable');
    const bad2 = await api.call<{ error: { message: string } }>('PUT', '/clonesets', 'kind: CloneSet\n  : [');
    assert.equal(bad2.status, 400);
    assert.match(bad2.body.error.message, /YAML/);
    assert.equal((await api.call('GET', '/clonesets/bad')).status, 404);
    assert.equal((await api.call('GET', '/clonesets/nothing/ready')).status, 404);
    assert.equal((await api.call('POST', '/clonesets/nothing/pause')).status, 404);
    assert.deepEqual((await api.call('GET', '/clonesets')).body, []);
    // Through the CLI: the field is named, the exit code is 1.
    const file = join(workDir, 'bad.yaml');
    await writeFile(file, cloneSetYaml(opts({ name: 'bad', replicas: -1 })));
    const cli = await runCli(['rollout', 'apply', '-f', file, '--server', controller!.url]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /spec\.replicas/);
  });

  it('updates images in place: same sandbox and IP, new app container and image, sidecar untouched', async function () {
    const set = 'inplace';
    const file = join(workDir, `${set}.yaml`);
    await writeFile(file, cloneSetYaml(opts({ name: set, replicas: 2, maxUnavailable: 2 })));
    const applied = await runCli(['rollout', 'apply', '-f', file], { env: { LAZYPULL_SERVER: controller!.url } });
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /cloneset.apps.kruise.io\/inplace created/);
    const before = await timed('create2', () => api.rolledOut(set, 2));
    for (const p of before.pods) assert.ok(env!.network.contains(p.ip), `pod IP ${p.ip}`);

    // kubectl-style table and the JSON status through the CLI.
    const table = await runCli(['rollout', 'status', set, '--server', controller!.url]);
    assert.equal(table.code, 0, table.stderr);
    const [header, row] = table.stdout.trim().split('\n');
    assert.deepEqual(header.split(/\s+/), ['NAME', 'DESIRED', 'UPDATED', 'UPDATED_READY', 'READY', 'TOTAL', 'AGE']);
    assert.deepEqual(row.split(/\s+/).slice(0, 6), [set, '2', '2', '2', '2', '2']);
    const json = JSON.parse((await runCli(['rollout', 'status', set, '--json', '--server', controller!.url])).stdout);
    assert.equal(json.updateRevision, before.updateRevision);
    assert.equal(json.pods.length, 2);
    assert.deepEqual(Object.keys(json.pods[0].containers[0]).sort(), ['containerId', 'imageRef', 'name']);

    const sidecarStart = new Map<string, number>();
    for (const p of before.pods) {
      const st = (await env!.cri.containerStatus(container(p, 'sidecar').containerId)).status;
      sidecarStart.set(p.name, st!.startedAt);
    }
    const watch = spawn(process.execPath, [CLI_PATH, 'rollout', 'status', set, '--watch', '--interval', '100', '--server', controller!.url]);
    let watched = '';
    watch.stdout.on('data', (d: Buffer) => (watched += d.toString()));
    await writeFile(file, cloneSetYaml(opts({ name: set, replicas: 2, maxUnavailable: 2, image: v2 })));
    assert.equal((await runCli(['rollout', 'apply', '-f', file, '--server', controller!.url])).code, 0);
    const after = await timed('inPlace2', () => api.rolledOut(set, 2));
    await sleep(300);
    const watchExit = new Promise((r) => watch.once('exit', r));
    watch.kill('SIGINT');
    await watchExit;
    const lines = watched.trim().split('\n');
    assert.equal(lines.filter((l) => l.startsWith('NAME')).length, 1, `one header: ${watched}`);
    assert.ok(lines.length >= 3, `a line per change: ${watched}`);
    assert.deepEqual(lines[lines.length - 1].split(/\s+/).slice(0, 6), [set, '2', '2', '2', '2', '2']);
    assert.notEqual(after.updateRevision, before.updateRevision);
    const old = byName(before.pods);
    assert.deepEqual([...old.keys()].sort(), after.pods.map((p) => p.name).sort(), 'same pods');
    for (const p of after.pods) {
      const was = old.get(p.name)!;
      assert.equal(p.sandboxId, was.sandboxId, 'sandbox kept');
      assert.equal(p.ip, was.ip, 'IP kept');
      assert.notEqual(container(p, 'app').containerId, container(was, 'app').containerId, 'app container replaced');
      assert.notEqual(container(p, 'app').imageRef, container(was, 'app').imageRef, 'new image reference');
      assert.match(container(p, 'app').imageRef, /@sha256:[0-9a-f]{64}$/);
      assert.equal(container(p, 'sidecar').containerId, container(was, 'sidecar').containerId, 'sidecar kept');
      const side = (await env!.cri.containerStatus(container(p, 'sidecar').containerId)).status;
      assert.equal(side?.state, 'CONTAINER_RUNNING');
      assert.equal(side?.startedAt, sidecarStart.get(p.name), 'sidecar start time unchanged');
      const app = (await env!.cri.containerStatus(container(p, 'app').containerId)).status;
      assert.equal(app?.metadata?.attempt, 1, 'first replacement');
      // Never both at once: the new container starts once the old one has finished (kept, dead, for its logs).
      let replaced = (await env!.cri.containerStatus(container(was, 'app').containerId)).status;
      for (const deadline = Date.now() + 10_000; replaced?.state !== 'CONTAINER_EXITED' && Date.now() < deadline; replaced = (await env!.cri.containerStatus(container(was, 'app').containerId)).status) await sleep(20);
      assert.equal(replaced?.state, 'CONTAINER_EXITED');
      assert.ok(replaced!.finishedAt > 0 && replaced!.finishedAt <= app!.startedAt, `old finished ${replaced!.finishedAt}, new started ${app!.startedAt}`);
      // Its own PID namespace, a kubelet's default: PID 1 there is the app's command, not the sandbox's pause.
      const init = await env!.cri.execSync(container(p, 'app').containerId, ['cat', '/proc/1/cmdline']);
      assert.match(init.stdout.toString(), /trap/);
      const version = await env!.cri.execSync(container(p, 'app').containerId, ['cat', '/app/version.txt']);
      assert.equal(version.stdout.toString(), 'v2\n');
      assert.equal((await env!.cri.podSandboxStatus(p.sandboxId)).status?.state, 'SANDBOX_READY');
    }

    // Scale up at the new revision, then down.
    await api.apply(cloneSetYaml(opts({ name: set, replicas: 3, maxUnavailable: 2, image: v2 })));
    const three = await timed('scaleUp', () => api.rolledOut(set, 3));
    for (const [name, p] of old) assert.equal(three.pods.find((x) => x.name === name)?.sandboxId, p.sandboxId, 'existing pods untouched by scaling');
    await api.apply(cloneSetYaml(opts({ name: set, replicas: 1, maxUnavailable: 2, image: v2 })));
    await timed('scaleDown', () => api.rolledOut(set, 1));
    assert.equal((await sandboxesOf(set)).length, 1);

    // pause / resume reach the spec.
    assert.equal((await runCli(['rollout', 'pause', set, '--server', controller!.url])).code, 0);
    assert.equal(((await api.call<{ spec: { updateStrategy: { paused: boolean } } }>('GET', `/clonesets/${set}`)).body.spec.updateStrategy.paused), true);
    assert.equal((await runCli(['rollout', 'resume', set, '--server', controller!.url])).code, 0);
    assert.equal(((await api.call<{ spec: { updateStrategy: { paused: boolean } } }>('GET', `/clonesets/${set}`)).body.spec.updateStrategy.paused), false);
    const del = await runCli(['rollout', 'delete', set, '--server', controller!.url]);
    assert.equal(del.code, 0, del.stderr);
    assert.deepEqual(await sandboxesOf(set), []);
  });

  it('CRI runtime: an in-place replacement taken again (as after a crash) is not done twice; deletePod is idempotent', async function () {
    const runtime = new CriPodRuntime(env!.cri, { logRoot: join(workDir, 'direct-pods'), cgroupParent: `/${env!.cgroupRoot}` });
    try {
      const template = (image: string): PodTemplate => ({
        labels: { app: 'direct' },
        annotations: { note: 'kept' },
        containers: [
          { name: 'app', image, command: SERVE_COMMAND, readinessProbe: { exec: { command: ['cat', '/app/version.txt'], initialDelaySeconds: 0, periodSeconds: 1, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 1 } } },
          { name: 'sidecar', image: sidecar, command: SIDECAR_COMMAND },
        ],
      });
      const labels = { app: 'direct', 'lazypull.io/cloneset': 'direct' };
      const created = await runtime.createPod('direct-0', template(v1), 'rev1', labels);
      assert.equal(created.revision, 'rev1');
      assert.ok(env!.network.contains(created.ip));
      await runtime.updateContainersInPlace(created, template(v2), ['app'], 'rev2');
      // Again at once, with no listing since: the runtime must not go by its listing from before the first call.
      await runtime.updateContainersInPlace(created, template(v2), ['app'], 'rev2');
      const [once] = await runtime.listPods(labels);
      await runtime.updateContainersInPlace(once, template(v2), ['app'], 'rev2');
      const [twice] = await runtime.listPods(labels);
      const app = (p: typeof once): string => p.containers.find((c) => c.name === 'app')!.containerId;
      assert.equal(app(twice), app(once), 'the second call carried on with the same container');
      assert.notEqual(app(once), app(created));
      assert.equal(twice.revision, 'rev2');
      assert.equal(twice.containers.find((c) => c.name === 'app')?.running, true, 'the new container runs once the call returns');
      const apps = await criContainers(created.sandboxId);
      assert.deepEqual(apps.map((c) => c.metadata?.attempt).sort(), [0, 1]);
      // Readiness comes from the probe, which began at the start; a later listing shows it.
      let listed = await runtime.listPods(labels);
      for (const deadline = Date.now() + 10_000; !listed[0]?.containersReady && Date.now() < deadline; listed = await runtime.listPods(labels)) await sleep(50);
      assert.equal(listed.length, 1);
      assert.equal(listed[0].sandboxId, created.sandboxId);
      assert.equal(listed[0].containersReady, true, JSON.stringify(listed[0].containers));
      await runtime.deletePod(listed[0], 1);
      await runtime.deletePod(listed[0], 1);
      assert.deepEqual(await runtime.listPods(labels), []);
    } finally {
      runtime.close();
    }
  });

  it('CRI runtime: an in-place replacement starts the new container only after the old one has finished, even a slow one', async function () {
    const runtime = new CriPodRuntime(env!.cri, { logRoot: join(workDir, 'slow-stop-pods'), cgroupParent: `/${env!.cgroupRoot}` });
    try {
      // 0.3 s from SIGTERM to exit, longer than a container start: a replacement started at the signal would overlap it.
      const slowStop = ['/bin/sh', '-c', 'trap "sleep 0.3; exit 0" TERM; while true; do sleep 1 & wait $!; done'];
      const template = (image: string): PodTemplate => ({ labels: { app: 'slow-stop' }, annotations: {}, containers: [{ name: 'app', image, command: slowStop }] });
      const labels = { app: 'slow-stop', 'lazypull.io/cloneset': 'slow-stop' };
      await runtime.createPod('slow-stop-0', template(v1), 'rev1', labels);
      // The listing the controller plans on: it tells the runtime the running container's process.
      const [before] = await runtime.listPods(labels);
      await runtime.updateContainersInPlace(before, template(v2), ['app'], 'rev2');
      const [after] = await runtime.listPods(labels);
      const oldId = before.containers[0].containerId;
      const newId = after.containers[0].containerId;
      assert.notEqual(newId, oldId);
      // containerd's answer to the stop is not waited for: it shows the old container exited a little later.
      let old = (await env!.cri.containerStatus(oldId)).status!;
      for (const deadline = Date.now() + 10_000; old.state !== 'CONTAINER_EXITED' && Date.now() < deadline; old = (await env!.cri.containerStatus(oldId)).status!) await sleep(20);
      const fresh = (await env!.cri.containerStatus(newId)).status!;
      assert.equal(old.state, 'CONTAINER_EXITED');
      assert.equal(fresh.state, 'CONTAINER_RUNNING');
      assert.equal(old.exitCode, 0, 'it ended on its own after SIGTERM, not by the kill timeout');
      assert.ok(old.finishedAt > 0 && old.finishedAt <= fresh.startedAt, `old finished ${old.finishedAt}, new started ${fresh.startedAt}`);
      await runtime.deletePod(after, 1);
    } finally {
      runtime.close();
    }
  });

  it('CRI runtime: listings see a container or sandbox stopped behind its back; image references are repo digests', async function () {
    const runtime = new CriPodRuntime(env!.cri, { logRoot: join(workDir, 'facts-pods'), cgroupParent: `/${env!.cgroupRoot}` });
    try {
      const template: PodTemplate = {
        labels: { app: 'facts' },
        annotations: {},
        containers: [
          { name: 'app', image: v1, command: SERVE_COMMAND, readinessProbe: { exec: { command: ['cat', '/app/version.txt'], initialDelaySeconds: 0, periodSeconds: 1, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 1 } } },
          { name: 'sidecar', image: sidecar, command: SIDECAR_COMMAND },
        ],
      };
      const labels = { app: 'facts', 'lazypull.io/cloneset': 'facts' };
      const created = await runtime.createPod('facts-0', template, 'rev1', labels);
      const [first] = await runtime.listPods(labels);
      assert.equal(first.containersReady, true, JSON.stringify(first.containers));
      assert.equal(first.ip, created.ip);
      const app = first.containers.find((c) => c.name === 'app')!;
      // The reference the controller records and compares: ContainerStatus's repo digest, not the listing's image ID.
      assert.equal(app.imageRef, (await env!.cri.containerStatus(app.containerId)).status?.imageRef);
      assert.match(app.imageRef, /@sha256:/);
      const sidecarId = first.containers.find((c) => c.name === 'sidecar')!.containerId;
      await env!.cri.stopContainer(sidecarId, 0);
      const [stopped] = await runtime.listPods(labels);
      assert.equal(stopped.containers.find((c) => c.name === 'sidecar')?.running, false);
      assert.equal(stopped.containersReady, false);
      assert.equal(stopped.terminating, false);
      await env!.cri.stopPodSandbox(created.sandboxId);
      const [gone] = await runtime.listPods(labels);
      assert.equal(gone.terminating, true, 'a stopped sandbox is on its way out');
      assert.equal(gone.containers.find((c) => c.name === 'app')?.running, false);
      await runtime.deletePod(gone, 0);
      assert.deepEqual(await runtime.listPods(labels), []);
    } finally {
      runtime.close();
    }
  });

  describe('5 replicas', function () {
    const set = 'five';
    let poller: ReadyPoller | undefined;
    let v1Revision = '';
    let v2Revision = '';
    let initial = new Map<string, PodView>();

    after(async function () {
      await poller?.stop();
      if (env && controller) await deleteSet(set).catch(() => undefined);
    });

    it('partition 2 of 5 leaves exactly 2 pods on the old revision; maxUnavailable 1 on the ready set; a pod leaves it ≥ 2 s before its container stops', async function () {
      const base = { name: set, replicas: 5, maxUnavailable: 1, gracePeriodSeconds: 2 };
      v1Revision = (await api.apply(cloneSetYaml(opts(base)))).updateRevision;
      const created = await timed('create5', () => api.rolledOut(set, 5));
      initial = byName(created.pods);
      poller = new ReadyPoller(api, set);
      const t = Date.now();
      v2Revision = (await api.apply(cloneSetYaml(opts({ ...base, image: v2, partition: 2 })))).updateRevision;
      const s = await api.waitFor(set, '3 updated and all ready', (x) => x.updatedReadyReplicas === 3 && x.readyReplicas === 5);
      timings.partition3of5 = (Date.now() - t) / 1000;
      await sleep(1500);
      const settled = await api.status(set);
      assert.equal(settled.updatedReplicas, 3);
      assert.equal(settled.pods.filter((p) => p.revision === v1Revision).length, 2, 'exactly 2 pods on the old revision');
      assert.equal(settled.pods.filter((p) => p.revision === v2Revision).length, 3);
      // Without a priority strategy the update order is by name: the last two stay old.
      assert.deepEqual(settled.pods.filter((p) => p.revision === v1Revision).map((p) => p.name).sort(), [`${set}-3`, `${set}-4`]);
      assert.equal(s.currentRevision, v1Revision);
      assert.equal(poller.maxMissing(5), 1, 'never more than maxUnavailable (1) missing from the ready set');
      console.log(`      ready-set samples: ${poller.samples.length}`);

      // The gate closed at least gracePeriodSeconds before the old container stopped.
      const gaps: number[] = [];
      for (const p of settled.pods.filter((x) => x.revision === v2Revision)) {
        const left = poller.leftReadySet(p.name, v1Revision);
        assert.ok(left !== undefined, `saw ${p.name} leave the ready set`);
        const oldId = container(initial.get(p.name)!, 'app').containerId;
        const old = (await env!.cri.containerStatus(oldId)).status;
        assert.equal(old?.state, 'CONTAINER_EXITED');
        const stoppedAt = old!.finishedAt / 1e6;
        gaps.push(stoppedAt - left.firstGone);
        // Strict against the last answer that showed it ready; a poll interval (plus latency) of slack against the first that did not.
        assert.ok(stoppedAt - left.lastReady >= 2000, `${p.name}: last seen ready at ${left.lastReady}, old container stopped at ${stoppedAt}`);
        assert.ok(stoppedAt - left.firstGone >= 2000 - 250, `${p.name}: gone from the ready set at ${left.firstGone}, old container stopped at ${stoppedAt} (${stoppedAt - left.firstGone} ms later)`);
      }
      console.log(`      left ready set → old container stopped (ms): ${gaps.map((g) => g.toFixed(0)).join(', ')}`);
    });

    it('partition 0 finishes the rollout in place, never more than 1 pod missing', async function () {
      const t = Date.now();
      await api.apply(cloneSetYaml(opts({ name: set, replicas: 5, maxUnavailable: 1, gracePeriodSeconds: 2, image: v2 })));
      const done = await api.rolledOut(set, 5);
      timings.partitionRest = (Date.now() - t) / 1000;
      await poller!.stop();
      assert.equal(poller!.maxMissing(5), 1);
      for (const p of done.pods) {
        assert.equal(p.sandboxId, initial.get(p.name)?.sandboxId);
        assert.equal(p.revision, v2Revision);
      }
    });

    it('kill -9 of the controller mid-rollout: a restarted one completes it, no pod upgraded twice, none lost', async function () {
      const base = { name: set, replicas: 5, maxUnavailable: 1, gracePeriodSeconds: 1 };
      const before = byName((await api.status(set)).pods);
      const t = Date.now();
      await api.apply(cloneSetYaml(opts(base)));
      const poller = new ReadyPoller(api, set);
      // Kill while a pod is between gate and replacement or being verified, then once more soon after the restart.
      const killedAfter: string[] = [];
      const killAndRestart = async (): Promise<void> => {
        await restartController(() => {
          const last = controller!.events().filter((e) => e.pod !== undefined).slice(-2);
          killedAfter.push(last.map((e) => `${e.event}(${e.pod})`).join(' '));
        });
      };
      await api.waitFor(set, 'one pod updated and one mid-upgrade', (s) => s.updatedReplicas >= 2 && s.pods.some((p) => !p.ready), 30_000);
      await killAndRestart();
      await api.waitFor(set, 'a third pod updated', (s) => s.updatedReplicas >= 3, 30_000);
      await killAndRestart();
      console.log(`      killed after: ${killedAfter.join(' | ')}`);
      const done = await api.rolledOut(set, 5, 60_000);
      timings.killRollout = (Date.now() - t) / 1000;
      await poller.stop();
      assert.ok(poller.maxMissing(5) <= 1, `at most 1 pod missing from the ready set across the restarts (${poller.maxMissing(5)})`);
      assert.equal(done.updateRevision, v1Revision, 'rolled back to v1 in place');
      assert.equal(done.pods.length, 5, 'no pod lost');
      assert.equal((await sandboxesOf(set)).length, 5, 'no extra sandbox');
      for (const p of done.pods) {
        assert.equal(p.sandboxId, before.get(p.name)?.sandboxId, `${p.name} kept its sandbox`);
        const apps = (await criContainers(p.sandboxId)).sort((a, b) => (b.metadata?.attempt ?? 0) - (a.metadata?.attempt ?? 0));
        // v1 (attempt 0) → v2 (attempt 1) → v1 (attempt 2): exactly one replacement per rollout.
        assert.equal(apps[0].metadata?.attempt, 2, `${p.name}: app container replaced exactly once in this rollout`);
        assert.equal(apps[0].id, container(p, 'app').containerId);
        assert.ok(apps.length <= 2, `${p.name}: at most the current and the previous app container (${apps.length})`);
        const version = await env!.cri.execSync(apps[0].id, ['cat', '/app/version.txt']);
        assert.equal(version.stdout.toString(), 'v1\n');
      }
      assert.match(controller!.log(), /"event":"started"/);
    });
  });

  it('orderPriority changes the update order: by the integer in lazypull.io/pod-name, larger first (as CloneSet sorts)', async function () {
    const name = 'ordered';
    const base = { name, replicas: 3, maxUnavailable: 1, orderedKey: 'lazypull.io/pod-name' };
    const v1Rev = (await api.apply(cloneSetYaml(opts(base)))).updateRevision;
    await api.rolledOut(name, 3);
    const v2Rev = (await api.apply(cloneSetYaml(opts({ ...base, image: v2 })))).updateRevision;
    assert.notEqual(v2Rev, v1Rev);
    const firstSeen = new Map<string, number>();
    const deadline = Date.now() + 60_000;
    while (firstSeen.size < 3 && Date.now() < deadline) {
      for (const p of (await api.status(name)).pods) if (p.revision === v2Rev && !firstSeen.has(p.name)) firstSeen.set(p.name, Date.now());
      await sleep(50);
    }
    const order = [...firstSeen.entries()].sort((a, b) => a[1] - b[1]).map(([n]) => n);
    assert.deepEqual(order, [`${name}-2`, `${name}-1`, `${name}-0`]);
    await deleteSet(name);
  });

  it('rollout label labels pods as kubectl label does: KEY=VALUE, KEY-, --overwrite; errors name the field; unknown set or pod is 404; labels survive a restart', async function () {
    const set = 'labels';
    await api.apply(cloneSetYaml(opts({ name: set, replicas: 2, maxUnavailable: 1 })));
    const before = await api.rolledOut(set, 2);
    const pod = `${set}-0`;
    const label = (...args: string[]) => runCli(['rollout', 'label', ...args, '--server', controller!.url]);

    const added = await label(set, pod, 'zone=a', 'tier=web');
    assert.equal(added.code, 0, added.stderr);
    assert.equal(added.stdout, `pod/${pod} labeled\n`);
    const conflict = await label(set, pod, 'zone=b');
    assert.equal(conflict.code, 1);
    assert.match(conflict.stderr, /'zone' already has a value \(a\), and --overwrite is false/);
    assert.equal((await label(set, pod, 'zone=b', '--overwrite')).stdout, `pod/${pod} labeled\n`);
    assert.equal((await label(set, pod, 'zone=b')).stdout, `pod/${pod} not labeled\n`, 'the same value again changes nothing');
    assert.equal((await label(set, pod, 'tier-')).stdout, `pod/${pod} unlabeled\n`);
    const again = await label(set, pod, 'tier-');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stderr, 'label "tier" not found.\n');
    assert.equal(again.stdout, `pod/${pod} not labeled\n`);
    const json = JSON.parse((await label(set, pod, 'marker=x', '--json')).stdout) as { labels: Record<string, string>; result: string };
    assert.equal(json.result, 'labeled');
    assert.equal(json.labels.zone, 'b');
    assert.equal(json.labels.app, set, 'the template labels are there too');

    // Bad arguments: caught by the CLI, the field named; the server checks them again.
    const cases: Array<[string[], RegExp]> = [
      [[set, pod, 'Zone!=a'], /metadata\.labels: "Zone!" is not a valid label key/],
      [[set, pod, 'zone=a b'], /metadata\.labels\[zone\]: "a b" must be at most 63/],
      [[set, pod, `zone=${'x'.repeat(64)}`], /metadata\.labels\[zone\]/],
      [[set, pod, 'zone'], /unknown label spec "zone"/],
      [[set, pod, 'zone=a', 'zone-'], /can not both modify and remove label "zone"/],
      [[set, pod, 'app=other'], /metadata\.labels: "app" is in the CloneSet's selector/],
      [[set, pod, 'lazypull.io/pod-name=x'], /is set by the controller/],
      [['nothing', pod, 'zone=a'], /CloneSet "nothing" not found/],
      [[set, `${set}-7`, 'zone=a'], /pod "labels-7" of CloneSet "labels" not found/],
    ];
    for (const [args, expected] of cases) {
      const r = await label(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, expected, args.join(' '));
    }
    const patch = (path: string, body: unknown) => api.call<{ error: { field?: string; message: string } }>('PATCH', path, JSON.stringify(body));
    const badKey = await patch(`/clonesets/${set}/pods/${pod}/labels`, { labels: { 'Zone!': 'a' } });
    assert.equal(badKey.status, 400);
    assert.equal(badKey.body.error.field, 'metadata.labels');
    const badValue = await patch(`/clonesets/${set}/pods/${pod}/labels`, { labels: { zone: 7 } });
    assert.equal(badValue.status, 400);
    assert.equal(badValue.body.error.field, 'metadata.labels[zone]');
    assert.equal((await patch(`/clonesets/nothing/pods/${pod}/labels`, { labels: { zone: 'a' } })).status, 404);
    assert.equal((await patch(`/clonesets/${set}/pods/${set}-7/labels`, { labels: { zone: 'a' } })).status, 404);
    assert.equal((await patch(`/clonesets/${set}/pods/${pod}/labels`, { labels: { zone: 'c' } })).status, 409);
    assert.equal((await api.call('GET', `/clonesets/${set}/pods/${pod}/labels`)).status, 405);

    const shown = byName((await api.status(set)).pods);
    assert.deepEqual(pick(shown.get(pod)!.labels, ['zone', 'marker', 'tier']), { zone: 'b', marker: 'x' });
    assert.deepEqual(pick(shown.get(`${set}-1`)!.labels, ['zone', 'marker']), {}, 'only the labelled pod has them');
    await restartController();
    const restarted = byName((await api.status(set)).pods);
    assert.deepEqual(pick(restarted.get(pod)!.labels, ['zone', 'marker']), { zone: 'b', marker: 'x' }, 'kept in the store across a restart');
    assert.equal(restarted.get(pod)!.sandboxId, byName(before.pods).get(pod)!.sandboxId);
    await deleteSet(set);
  });

  it('scatterStrategy on added labels (zone=a on 3 of 6 pods): the update order is the planner\'s scattered one, zone=a never updated back to back', async function () {
    const set = 'zones';
    const replicas = 6;
    const strategy: ScatterStrategy = [{ key: 'zone', value: 'a' }];
    const base = { name: set, replicas, maxUnavailable: 1, scatter: strategy };
    await api.apply(cloneSetYaml(opts(base)));
    const created = await api.rolledOut(set, replicas);
    const names = created.pods.map((p) => p.name).sort(naturally);
    // zone=a on the first three by name: by name alone they would be updated one after another.
    const zoneOf = (name: string): string => (names.indexOf(name) < 3 ? 'a' : 'b');
    for (const name of names) await runCliOk(['rollout', 'label', set, name, `zone=${zoneOf(name)}`, '--server', controller!.url]);
    const labelled = await api.status(set);
    for (const p of labelled.pods) assert.equal(p.labels.zone, zoneOf(p.name));

    const to = (await api.apply(cloneSetYaml(opts({ ...base, image: v2 })))).updateRevision;
    const done = await api.rolledOut(set, replicas);
    const order = updateOrder(set, 'gate_closed', to);
    // What the pure update-order functions give for the labels the controller serves.
    const pods = labelled.pods.map((p) => ({ name: p.name, labels: p.labels })).sort((a, b) => naturally(a.name, b.name));
    const expected = scatter(sortByPriority(pods, undefined), strategy, pods).map((p) => p.name);
    console.log(`      update order: ${order.map((n) => `${n}(${zoneOf(n)})`).join(' ')}`);
    assert.deepEqual(order, expected);
    assert.deepEqual(order, [0, 3, 4, 1, 5, 2].map((i) => `${set}-${i}`), 'Kruise\'s scatter: zone=a 1st, 4th and last');
    assert.notDeepEqual(order, names, 'not the default order (by name)');
    for (let i = 1; i < order.length; i++) assert.ok(!(zoneOf(order[i - 1]) === 'a' && zoneOf(order[i]) === 'a'), `zone=a twice in a row: ${order.join(' ')}`);
    // Updated in place: same sandboxes, so the labels stay.
    for (const p of done.pods) {
      assert.equal(p.sandboxId, byName(created.pods).get(p.name)?.sandboxId);
      assert.equal(p.labels.zone, zoneOf(p.name));
    }
    await deleteSet(set);
  });

  it('weightPriority on an added label puts that pod first; a recreated pod starts without its added labels', async function () {
    const set = 'canary';
    const base = { name: set, replicas: 3, maxUnavailable: 1, weightPriority: [{ weight: 100, matchLabels: { canary: 'true' } }] };
    await api.apply(cloneSetYaml(opts(base)));
    const before = byName((await api.rolledOut(set, 3)).pods);
    await runCliOk(['rollout', 'label', set, `${set}-1`, 'canary=true', '--server', controller!.url]);
    // A command change: each pod is recreated (new sandbox).
    const command = ['/bin/sh', '-c', 'trap "exit 0" TERM; echo canary; while true; do sleep 1 & wait $!; done'];
    const to = (await api.apply(cloneSetYaml(opts({ ...base, image: v2, command })))).updateRevision;
    const done = await api.rolledOut(set, 3);
    assert.deepEqual(updateOrder(set, 'recreating', to), [`${set}-1`, `${set}-0`, `${set}-2`], 'the labelled pod first, then by name');
    const canary = done.pods.find((p) => p.name === `${set}-1`)!;
    assert.notEqual(canary.sandboxId, before.get(canary.name)?.sandboxId, 'recreated');
    assert.equal(canary.labels.canary, undefined, 'a new sandbox does not inherit added labels');
    assert.ok(
      controller!.events().some((e) => e.event === 'pod_labels_dropped' && e.cloneset === set && e.pod === canary.name),
      'the stored labels were dropped with the old sandbox',
    );
    await deleteSet(set);
  });

  it('a command change recreates the pod under InPlaceIfPossible and is refused under InPlaceOnly', async function () {
    const set = 'cmd';
    const base = { name: set, replicas: 2, maxUnavailable: 2 };
    const before = byName((await timed('create2b', async () => {
      await api.apply(cloneSetYaml(opts(base)));
      return api.rolledOut(set, 2);
    })).pods);
    const command = ['/bin/sh', '-c', 'trap "exit 0" TERM; echo changed; while true; do sleep 1 & wait $!; done'];
    await api.apply(cloneSetYaml(opts({ ...base, image: v2, command, type: 'InPlaceOnly' })));
    const refused = await api.waitFor(set, 'InPlaceOnly refusal', (s) => /InPlaceOnly/.test(s.message ?? ''));
    assert.match(refused.message ?? '', /command/);
    await sleep(1500);
    const still = await api.status(set);
    assert.equal(still.updatedReplicas, 0);
    assert.equal(still.readyReplicas, 2);
    for (const p of still.pods) assert.equal(p.sandboxId, before.get(p.name)?.sandboxId);

    const t = Date.now();
    await api.apply(cloneSetYaml(opts({ ...base, image: v2, command, type: 'InPlaceIfPossible' })));
    const done = await api.rolledOut(set, 2);
    timings.recreate2 = (Date.now() - t) / 1000;
    for (const p of done.pods) {
      assert.notEqual(p.sandboxId, before.get(p.name)?.sandboxId, `${p.name} has a new sandbox`);
      assert.equal((await criContainers(p.sandboxId))[0]?.metadata?.attempt, 0);
    }
    assert.equal((await sandboxesOf(set)).length, 2, 'old sandboxes removed');
    await deleteSet(set);
  });

  it('maxSurge 1, maxUnavailable 0: a new pod first, never more than replicas + 1 pods nor fewer than replicas ready, then exactly replicas pods at the new revision', async function () {
    const set = 'surge';
    const replicas = 3;
    const base = { name: set, replicas, maxUnavailable: 0, maxSurge: 1 };
    await api.apply(cloneSetYaml(opts(base)));
    const initial = byName((await api.rolledOut(set, replicas)).pods);
    const initialSandboxes = new Set([...initial.values()].map((p) => p.sandboxId));
    // A command change: the update needs new pods, which is where surge applies.
    const command = ['/bin/sh', '-c', 'trap "exit 0" TERM; echo surge; while true; do sleep 1 & wait $!; done'];
    const samples: Array<{ at: number; sandboxes: string[]; ready: ReadyEntry[] }> = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const at = Date.now();
        const [sandboxes, ready] = await Promise.all([sandboxesOf(set), api.ready(set)]);
        samples.push({ at, sandboxes, ready });
        await sleep(Math.max(0, 100 - (Date.now() - at)));
      }
    })();
    const to = (await api.apply(cloneSetYaml(opts({ ...base, image: v2, command })))).updateRevision;
    const done = await api.rolledOut(set, replicas);
    sampling = false;
    await sampler;

    const most = Math.max(...samples.map((s) => s.sandboxes.length));
    const fewestReady = Math.min(...samples.map((s) => s.ready.filter((e) => e.ready).length));
    console.log(`      samples: ${samples.length}, most sandboxes: ${most}, fewest ready: ${fewestReady}`);
    assert.equal(most, replicas + 1, 'one surge pod at a time, and it was used');
    assert.ok(fewestReady >= replicas, `never fewer than ${replicas} ready (maxUnavailable 0): ${fewestReady}`);
    // The surge pod served at the new revision before any old sandbox went away.
    const surgeReady = samples.find((s) => s.ready.some((e) => !initial.has(e.name) && e.revision === to && e.ready));
    const oldGone = samples.find((s) => [...initialSandboxes].some((id) => !s.sandboxes.includes(id)));
    assert.ok(surgeReady !== undefined && oldGone !== undefined, 'saw the surge pod and an old pod go');
    assert.ok(surgeReady.at < oldGone.at, `surge pod ready at ${surgeReady.at}, first old sandbox gone at ${oldGone.at}`);
    const log = controller!.events();
    const applied = log.findIndex((e) => e.event === 'applied' && e.cloneset === set && e.revision === to);
    const firstChange = log.slice(applied).find((e) => e.cloneset === set && ['pod_created', 'recreating', 'pod_deleted'].includes(e.event ?? ''));
    assert.equal(firstChange?.event, 'pod_created', `the update began with the surge pod: ${JSON.stringify(firstChange)}`);
    assert.equal(firstChange.revision, to);
    assert.ok(!initial.has(firstChange.pod ?? ''), 'under a new name');

    assert.equal(done.pods.length, replicas);
    const now = await sandboxesOf(set);
    assert.equal(now.length, replicas, 'the surplus pod removed');
    for (const p of done.pods) {
      assert.equal(p.revision, to);
      assert.ok(!initialSandboxes.has(p.sandboxId), `${p.name} is a new pod`);
    }
    await deleteSet(set);
  });

  it('kill -9 inside the container replacement (new container created, old one still stopping): the restarted controller completes it, each container created once', async function () {
    const set = 'slowstop';
    // Stops 2 s after SIGTERM (as an app draining connections would): the replacement step lasts that long.
    const command = ['/bin/sh', '-c', 'trap "sleep 2; exit 0" TERM; while true; do sleep 1 & wait $!; done'];
    const base = { name: set, replicas: 3, maxUnavailable: 1, command };
    await api.apply(cloneSetYaml(opts(base)));
    const before = byName((await api.rolledOut(set, 3)).pods);
    const poller = new ReadyPoller(api, set);
    const to = (await api.apply(cloneSetYaml(opts({ ...base, image: v2 })))).updateRevision;

    // Wait for the step to begin, then for its new container: created, not started, while the old one is stopping.
    let inside: { pod: string; oldId: string; newId: string } | undefined;
    const deadline = Date.now() + 30_000;
    while (inside === undefined) {
      assert.ok(Date.now() < deadline, 'saw a replacement step begin');
      const step = controller!.events().find((e) => e.event === 'replacing_containers' && e.cloneset === set && e.to === to);
      if (step !== undefined) {
        const apps = await criContainers(before.get(step.pod!)!.sandboxId);
        const fresh = apps.find((c) => c.metadata?.attempt === 1 && c.state === 'CONTAINER_CREATED');
        const old = apps.find((c) => c.metadata?.attempt === 0 && c.state === 'CONTAINER_RUNNING');
        if (fresh !== undefined && old !== undefined) inside = { pod: step.pod!, oldId: old.id, newId: fresh.id };
      }
      if (inside === undefined) await sleep(20);
    }
    let stateAtKill: string | undefined;
    await restartController(async () => {
      stateAtKill = (await env!.cri.containerStatus(inside!.newId)).status?.state;
    });
    console.log(`      killed inside the replacement of ${inside.pod}`);
    assert.equal(stateAtKill, 'CONTAINER_CREATED', 'killed before the new container was started');
    const done = await api.rolledOut(set, 3, 60_000);
    await poller.stop();

    assert.ok(poller.maxMissing(3) <= 1, `at most 1 pod missing from the ready set across the restart (${poller.maxMissing(3)})`);
    assert.equal(done.pods.length, 3, 'no pod lost');
    assert.equal((await sandboxesOf(set)).length, 3, 'no extra sandbox');
    const events = controller!.events().filter((e) => e.cloneset === set && e.to === to);
    for (const p of done.pods) {
      assert.equal(p.sandboxId, before.get(p.name)?.sandboxId, `${p.name} kept its sandbox`);
      const apps = await criContainers(p.sandboxId);
      assert.deepEqual(apps.map((c) => c.metadata?.attempt).sort(), [0, 1], `${p.name}: one app container per revision`);
      const version = await env!.cri.execSync(container(p, 'app').containerId, ['cat', '/app/version.txt']);
      assert.equal(version.stdout.toString(), 'v2\n');
      for (const event of ['gate_closed', 'upgraded']) {
        assert.equal(events.filter((e) => e.event === event && e.pod === p.name).length, 1, `${p.name}: ${event} once`);
      }
    }
    assert.equal(container(done.pods.find((p) => p.name === inside!.pod)!, 'app').containerId, inside.newId, 'the restarted controller carried on with the container made before the kill');
    await deleteSet(set);
  });

  it('a missing image blocks the rollout with the reason; pods keep serving their old containers', async function () {
    const set = 'missing';
    const base = { name: set, replicas: 2, maxUnavailable: 1 };
    await api.apply(cloneSetYaml(opts(base)));
    const before = byName((await api.rolledOut(set, 2)).pods);
    const missing = `${env!.registry.host}/test/app:does-not-exist`;
    await api.apply(cloneSetYaml(opts({ ...base, image: missing })));
    // First the pre-pull's failure is shown; once a pod has been tried, the rollout's stop, naming the pod and the image.
    const stuck = await api.waitFor(set, 'blocked status', (s) => /rollout stopped|blocked/.test(s.message ?? ''));
    assert.match(stuck.message ?? '', /does-not-exist/);
    assert.match(stuck.message ?? '', /not found/i);
    await sleep(1500);
    const s = await api.status(set);
    assert.equal(s.updatedReplicas, 0);
    assert.equal(s.readyReplicas, 2);
    for (const p of s.pods) {
      assert.ok(p.ready, `${p.name} still serving`);
      assert.equal(container(p, 'app').containerId, container(before.get(p.name)!, 'app').containerId, 'old container kept');
    }
    assert.ok((await api.ready(set)).every((e) => e.ready));
    // Applying the previous spec clears it.
    await api.apply(cloneSetYaml(opts(base)));
    const back = await api.waitFor(set, 'message cleared', (x) => x.message === undefined && x.updatedReadyReplicas === 2);
    for (const p of back.pods) assert.equal(container(p, 'app').containerId, container(before.get(p.name)!, 'app').containerId);
    await deleteSet(set);
  });

  it('a new container that never becomes ready stops the rollout at maxUnavailable; the previous spec rolls back in place', async function () {
    const set = 'crash';
    const base = { name: set, replicas: 3, maxUnavailable: 1 };
    await api.apply(cloneSetYaml(opts(base)));
    const before = byName((await api.rolledOut(set, 3)).pods);
    const poller = new ReadyPoller(api, set);
    const badRevision = (await api.apply(cloneSetYaml(opts({ ...base, image: bad })))).updateRevision;
    await api.waitFor(set, 'one pod on the bad revision', (s) => s.updatedReplicas === 1);
    await sleep(4000);
    const s = await api.status(set);
    assert.equal(s.updatedReplicas, 1, 'no progress past maxUnavailable');
    assert.equal(s.updatedReadyReplicas, 0);
    assert.equal(s.readyReplicas, 2);
    assert.equal(s.pods.filter((p) => p.revision === badRevision).length, 1);
    const t = Date.now();
    await api.apply(cloneSetYaml(opts(base)));
    const back = await api.rolledOut(set, 3);
    timings.rollback = (Date.now() - t) / 1000;
    await poller.stop();
    assert.equal(poller.maxMissing(3), 1);
    for (const p of back.pods) {
      assert.equal(p.sandboxId, before.get(p.name)?.sandboxId, 'rolled back in place');
      assert.equal(container(p, 'sidecar').containerId, container(before.get(p.name)!, 'sidecar').containerId);
    }
    await deleteSet(set);
  });

  describe('with the lazypull snapshotter (eStargz images, layers mounted lazily)', function () {
    let lazyEnv: CriEnvironment | undefined;
    let snapshotter: LocalSnapshotter | undefined;
    let lazyController: ControllerProcess | undefined;
    let dir = '';

    before(async function () {
      this.timeout(180_000);
      requireFuse(this);
      dir = await mkdtemp(join(tmpdir(), 'lzp-test-controller-lazy-'));
      lazyEnv = await startCriEnvironment({
        snapshotter: 'lazypull',
        beforeContainerd: async (ctx) => {
          snapshotter = await startLocalSnapshotter({ dir, plainHttpRegistries: [ctx.registry.host], hostsDir: ctx.hostsDir });
          return { proxySnapshotters: { lazypull: snapshotter.socket } };
        },
      });
      lazyController = await startControllerProcess(lazyEnv, join(dir, 'state'));
    });

    after(async function () {
      this.timeout(120_000);
      if (lazyController) await killController(lazyController);
      await lazyEnv?.stop();
      await snapshotter?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('pre-warms the new revision (layers mounted lazily) before the first pod is touched, then updates in place', async function () {
      const host = lazyEnv!.registry.host;
      const refs: Record<string, string> = {};
      for (const tag of ['v1', 'v2']) {
        refs[tag] = `${host}/lazy/app:${tag}`;
        await runCliOk(['convert', `oci:${join(workDir, tag)}:${tag}`, refs[tag], '--plain-http', '--level', '1']);
      }
      const lazyApi = new Api(lazyController!.url);
      const base = { name: 'lazy', replicas: 2, maxUnavailable: 1, image: refs.v1, sidecarImage: refs.v1 };
      await lazyApi.apply(cloneSetYaml(base));
      const before = byName((await lazyApi.rolledOut('lazy', 2)).pods);
      const t = Date.now();
      const { updateRevision } = await lazyApi.apply(cloneSetYaml({ ...base, image: refs.v2 }));
      const done = await lazyApi.rolledOut('lazy', 2);
      timings.lazyInPlace2 = (Date.now() - t) / 1000;
      for (const p of done.pods) {
        assert.equal(p.sandboxId, before.get(p.name)?.sandboxId);
        assert.notEqual(container(p, 'app').imageRef, container(before.get(p.name)!, 'app').imageRef);
        const version = await lazyEnv!.cri.execSync(container(p, 'app').containerId, ['cat', '/app/version.txt']);
        assert.equal(version.stdout.toString(), 'v2\n');
      }
      const mounted = await snapshotter!.mountStatuses();
      assert.ok(mounted.some((m) => m.reference === refs.v2), `a layer of v2 mounted lazily: ${mounted.map((m) => m.reference).join(', ')}`);
      const events = lazyController!.events();
      const prewarmed = events.findIndex((e) => e.event === 'prewarmed' && e.revision === updateRevision);
      const firstTouch = events.findIndex((e) => e.event === 'gate_closed' && e.to === updateRevision);
      assert.ok(prewarmed >= 0 && firstTouch > prewarmed, `pre-warm (${prewarmed}) before the first pod (${firstTouch})`);
      await lazyApi.delete('lazy');
    });
  });
});
