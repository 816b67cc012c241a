/**
 * The rollout benchmark (issue 5): N replicas of an app whose new version
 * changes only its top layer, rolled out by `lazypull controller` over
 * containerd's CRI; the time from `lazypull rollout apply -f v2.yaml` until
 * every replica is updated and ready, for
 *
 * (a) in place (InPlaceIfPossible), eStargz images, lazypull snapshotter;
 * (b) in place (InPlaceIfPossible), plain gzip images, overlayfs (full pull);
 * (c) recreate (ReCreate), plain gzip images, overlayfs (full pull).
 *
 * Every run starts a fresh node (containerd with CRI, CNI bridge, for (a) a
 * lazypull snapshotter with an empty cache, the controller), applies v1 and
 * waits until it serves (not timed), checks that v2 is not on the node, then
 * times the update. All nodes share one loopback registry.
 * LAZYPULL_BENCH_ROLLOUT_MODES=a,c (labels or names) runs only those modes,
 * for working on one of them; such a partial run does not update the docs.
 * LAZYPULL_BENCH_LOGS=DIR keeps each run's controller, containerd and
 * snapshotter logs there.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { UpdateStrategyType } from '../src/controller/types';
import { startLocalRegistry } from '../src/sandbox/local-registry';
import type { CloneSetStatusView as StatusView } from '../src/controller/controller';
import { median, nodeBenchmarkMissing, settle, withWorkDir } from './bench-util';
import { LAZYPULL_CLI } from './lazypull-convert';
import { prepareAppImages, READINESS_COMMAND, READY_FILE, type AppImages, type AppVersion } from './rollout-app-image';
import { appCloneSetYaml } from './rollout-manifest';
import { startRolloutNode, type RolloutNode } from './rollout-node';
import { rolloutTimeline, type RolloutTimeline } from './rollout-timeline';
import { toolVersion } from './tool-version';

const execFileP = promisify(execFile);
const SET_NAME = 'app';
/** Half the replicas at a time: the update goes in parallel and half the set keeps serving. */
export const MAX_UNAVAILABLE = '50%';
const ROLLOUT_TIMEOUT_MS = 10 * 60_000;
export type RolloutModeName = 'inplace-lazypull' | 'inplace-overlayfs' | 'recreate-overlayfs';

export interface RolloutMode {
  name: RolloutModeName;
  label: '(a)' | '(b)' | '(c)';
  title: string;
  type: UpdateStrategyType;
  images: 'estargz' | 'gzip';
  /** The lazypull snapshotter is the CRI snapshotter (else overlayfs). */
  lazy: boolean;
}

export const ROLLOUT_MODES: readonly RolloutMode[] = [
  { name: 'inplace-lazypull', label: '(a)', title: 'in-place + lazypull', type: 'InPlaceIfPossible', images: 'estargz', lazy: true },
  { name: 'inplace-overlayfs', label: '(b)', title: 'in-place + overlayfs full pull', type: 'InPlaceIfPossible', images: 'gzip', lazy: false },
  { name: 'recreate-overlayfs', label: '(c)', title: 'recreate + overlayfs full pull', type: 'ReCreate', images: 'gzip', lazy: false },
];

export interface RolloutRun {
  mode: RolloutModeName;
  repetition: number;
  /** From the start of `lazypull rollout apply -f v2.yaml` until all replicas are updated and ready: the headline. */
  seconds: number;
  /** The apply CLI process alone. */
  applySeconds: number;
  /** v1: apply until all replicas served (setup, not timed). */
  setupSeconds: number;
  timeline: RolloutTimeline;
  /** Seconds since the start at which the status first showed each pod updated and ready, in order. */
  podReadySeconds: number[];
  /** Per pod, from its new app container's start to the app writing its ready file: the app's own start-up. */
  appStartSeconds: number[];
  /** Layers of v2 the lazypull snapshotter mounted lazily, and what their servers fetched by the end of the run. */
  lazyLayers?: number;
  fetchedBytes?: number;
}

export interface RolloutResults {
  date: Date;
  command: string;
  repeat: number;
  replicas: number;
  maxUnavailable: string;
  images: AppImages;
  runs: RolloutRun[];
  /** Median seconds per mode. */
  medians: Record<RolloutModeName, number>;
  /** (a)/(c) and (b)/(c) of the medians: lower is better. */
  lazyInPlaceRatio: number;
  overlayInPlaceRatio: number;
  versions: Record<string, string>;
  /** Only some modes ran (LAZYPULL_BENCH_ROLLOUT_MODES): no ratios to publish. */
  partial: boolean;
}

/** The modes LAZYPULL_BENCH_ROLLOUT_MODES asks for (all by default). */
function modesToRun(): RolloutMode[] {
  const asked = (process.env.LAZYPULL_BENCH_ROLLOUT_MODES ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (asked.length === 0) return [...ROLLOUT_MODES];
  const modes = ROLLOUT_MODES.filter((m) => asked.includes(m.name) || asked.includes(m.label.replace(/[()]/g, '')));
  if (modes.length !== asked.length) throw new Error(`LAZYPULL_BENCH_ROLLOUT_MODES: choose from ${ROLLOUT_MODES.map((m) => `${m.label.replace(/[()]/g, '')} (${m.name})`).join(', ')}`);
  return modes;
}

export function rolloutAvailable(): string | undefined {
  return nodeBenchmarkMissing('the rollout benchmark', [
    ['containerd', 'containerd'],
    ['runc', 'runc'],
    ['docker-registry', 'docker-registry'],
    ['ip', 'iproute2'],
  ]);
}

const since = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e9;

/** `lazypull rollout ARGS --server URL` as a user runs it; its stdout. */
async function rolloutCli(node: RolloutNode, args: string[]): Promise<string> {
  const { stdout } = await execFileP(process.execPath, [LAZYPULL_CLI, 'rollout', ...args, '--server', node.controller.url], { timeout: 60_000 });
  return stdout;
}

/** Every replica at `revision`, ready, and nothing else in the set. */
function rolledOutTo(s: StatusView, revision: string, replicas: number): boolean {
  return (
    s.updateRevision === revision &&
    s.replicas === replicas &&
    s.readyReplicas === replicas &&
    s.updatedReplicas === replicas &&
    s.updatedReadyReplicas === replicas &&
    s.pods.length === replicas &&
    s.pods.every((p) => p.revision === revision && p.ready)
  );
}

/** The lazypull snapshotter's background fetch of v1's layers is over: a node that has run v1 for a while. */
async function backgroundFetchSettled(node: RolloutNode): Promise<void> {
  const deadline = Date.now() + ROLLOUT_TIMEOUT_MS;
  for (;;) {
    const statuses = (await node.snapshotter?.mountStatuses()) ?? [];
    if (statuses.every((s) => s.backgroundFetch === 'done' || s.backgroundFetch === 'disabled')) return;
    if (Date.now() > deadline) throw new Error(`background fetch of v1 not done: ${JSON.stringify(statuses.map((s) => [s.layer, s.backgroundFetch, s.percentLocal]))}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Throws unless every pod ended on `revision`, running v2, in place (same sandbox, new container) or recreated as the mode says. */
async function validate(mode: RolloutMode, node: RolloutNode, before: StatusView, after: StatusView, revision: string): Promise<void> {
  const what = `${mode.label} ${mode.title}`;
  const sandboxes = await node.env.cri.listPodSandbox({ labelSelector: { 'lazypull.io/cloneset': SET_NAME } });
  if (sandboxes.length !== before.pods.length) throw new Error(`${what}: ${sandboxes.length} sandboxes after the rollout, expected ${before.pods.length}`);
  for (const p of after.pods) {
    const old = before.pods.find((x) => x.name === p.name);
    const app = p.containers.find((c) => c.name === 'app');
    const oldApp = old?.containers.find((c) => c.name === 'app');
    if (old === undefined || app === undefined || oldApp === undefined) throw new Error(`${what}: pod ${p.name} (or its app container) is new or missing`);
    if (p.revision !== revision) throw new Error(`${what}: pod ${p.name} is on revision ${p.revision}, expected ${revision}`);
    const kept = p.sandboxId === old.sandboxId;
    if (mode.type === 'ReCreate' ? kept : !kept) throw new Error(`${what}: pod ${p.name} ${kept ? 'kept' : 'lost'} its sandbox ${old.sandboxId}`);
    if (kept && p.ip !== old.ip) throw new Error(`${what}: pod ${p.name} kept its sandbox but its IP went from ${old.ip} to ${p.ip}`);
    if (app.containerId === oldApp.containerId || app.imageRef === oldApp.imageRef) throw new Error(`${what}: pod ${p.name} still runs its v1 container or image`);
    const expected: AppVersion = 'v2';
    const served = (await node.env.cri.execSync(app.containerId, READINESS_COMMAND)).stdout.toString();
    if (served !== expected) throw new Error(`${what}: pod ${p.name} serves ${JSON.stringify(served)}, expected ${expected}`);
  }
}

/** Per pod: container start (CRI status) to the ready file's mtime, i.e. how long python took to start and run the app. */
async function appStartSeconds(node: RolloutNode, after: StatusView): Promise<number[]> {
  const out: number[] = [];
  for (const p of after.pods) {
    const id = p.containers.find((c) => c.name === 'app')?.containerId ?? '';
    const startedAtNs = (await node.env.cri.containerStatus(id)).status?.startedAt ?? 0;
    const mtime = await node.env.cri.execSync(id, ['stat', '-c', '%.3Y', READY_FILE]);
    out.push(Number(mtime.stdout.toString().trim()) - startedAtNs / 1e9);
  }
  return out.sort((a, b) => a - b);
}

async function measure(mode: RolloutMode, node: RolloutNode, app: AppImages, replicas: number, repetition: number): Promise<RolloutRun> {
  const images = mode.images === 'estargz' ? app.estargz : app.gzip;
  const manifest = async (version: AppVersion): Promise<string> => {
    const path = join(node.dir, `${version}.yaml`);
    await writeFile(path, appCloneSetYaml({ name: SET_NAME, replicas, image: images[version], type: mode.type, maxUnavailable: MAX_UNAVAILABLE }));
    return path;
  };

  const setupStart = process.hrtime.bigint();
  await rolloutCli(node, ['apply', '-f', await manifest('v1')]);
  const before = await node.api.rolledOut(SET_NAME, replicas, ROLLOUT_TIMEOUT_MS);
  const setupSeconds = since(setupStart);
  if (mode.lazy) await backgroundFetchSettled(node);
  if ((await node.env.cri.imageStatus(images.v2)) !== undefined) throw new Error(`${images.v2} is on the node before the apply`);
  const v2Manifest = await manifest('v2');
  await settle();

  const startMs = Date.now();
  const start = process.hrtime.bigint();
  const applied = JSON.parse(await rolloutCli(node, ['apply', '-f', v2Manifest, '--json'])) as { updateRevision: string };
  const applySeconds = since(start);
  const readyAt = new Map<string, number>();
  const after = await node.api.watchFor(
    SET_NAME,
    `${SET_NAME} rolled out to ${images.v2}`,
    (s) => {
      const t = since(start);
      for (const p of s.pods) if (p.revision === applied.updateRevision && p.ready && !readyAt.has(p.name)) readyAt.set(p.name, t);
      return rolledOutTo(s, applied.updateRevision, replicas);
    },
    ROLLOUT_TIMEOUT_MS,
  );
  const seconds = since(start);

  await validate(mode, node, before, after, applied.updateRevision);
  const run: RolloutRun = {
    mode: mode.name,
    repetition,
    seconds,
    applySeconds,
    setupSeconds,
    timeline: rolloutTimeline(node.controller.log(), applied.updateRevision, images.v2, startMs),
    podReadySeconds: [...readyAt.values()].sort((a, b) => a - b),
    appStartSeconds: await appStartSeconds(node, after),
  };
  if (node.snapshotter !== undefined) {
    const v2Mounts = (await node.snapshotter.mountStatuses()).filter((m) => m.reference === images.v2);
    if (v2Mounts.length === 0) throw new Error(`${mode.label} ${mode.title}: no layer of ${images.v2} was mounted lazily`);
    run.lazyLayers = v2Mounts.length;
    run.fetchedBytes = v2Mounts.reduce((n, m) => n + m.fetchedBytes, 0);
  }
  return run;
}

function describeRun(mode: RolloutMode, r: RolloutRun): string {
  const t = r.timeline;
  const s = (x: number | undefined): string => (x === undefined ? '?' : x.toFixed(2));
  const lazy = r.lazyLayers !== undefined ? `; v2 layers mounted lazily: ${r.lazyLayers}, fetched ${((r.fetchedBytes ?? 0) / 1e3).toFixed(1)} kB` : '';
  return (
    `#${r.repetition} ${mode.label} ${mode.title}: ${r.seconds.toFixed(2)} s ` +
    `(applied ${s(t.applied)}, apply CLI ${s(r.applySeconds)}, pre-warmed ${s(t.prewarmed)} [pull ${s(t.pullSeconds)}], first pod touched ${s(t.firstTouched)}, ` +
    `last replaced ${s(t.lastReplaced)}, one pod: update → running ${s(t.replaceSeconds.length > 0 ? median(t.replaceSeconds) : undefined)}, → ready ${s(t.upgradeSeconds.length > 0 ? median(t.upgradeSeconds) : undefined)}; pods ready at ${r.podReadySeconds.map((x) => x.toFixed(2)).join(' ')}; ` +
    `app start-up ${r.appStartSeconds.map((x) => x.toFixed(2)).join(' ')}; v1 setup ${r.setupSeconds.toFixed(1)} s${lazy})`
  );
}

/**
 * Runs per mode, each mode's median reported. Five, not three: (c)'s full
 * pull alone took 2.9-4.8 s from run to run on this machine, and (a) moves
 * by a quarter when the node's other work lands inside its second.
 */
const DEFAULT_REPEAT = 5;

export async function benchRollout(log: (line: string) => void): Promise<RolloutResults> {
  const repeat = Math.max(1, Number(process.env.LAZYPULL_BENCH_REPEAT ?? String(DEFAULT_REPEAT)));
  const replicas = Math.max(1, Number(process.env.LAZYPULL_BENCH_REPLICAS ?? '6'));
  const modes = modesToRun();
  return withWorkDir('lzp-bench-rollout-', log, async (work, stops) => {
    const registry = await startLocalRegistry({ parentDir: work });
    stops.add(() => registry.stop());
    const app = await prepareAppImages(work, registry, log);
    log(`app images converted in ${app.convertSeconds.toFixed(1)} s; top layer ${app.gzipTopBytes} B gzip, ${app.estargzTopBytes} B eStargz`);
    const runs: RolloutRun[] = [];
    for (let i = 1; i <= repeat; i++) {
      for (const mode of modes) {
        log(`#${i} ${mode.label} ${mode.title}: fresh node, ${replicas} replicas of v1 ...`);
        const node = await startRolloutNode(work, registry, mode.lazy);
        stops.add(() => node.stop());
        let run: RolloutRun;
        try {
          run = await measure(mode, node, app, replicas, i);
          if (process.env.LAZYPULL_BENCH_LOGS) await node.keepLogs(process.env.LAZYPULL_BENCH_LOGS, `${i}-${mode.name}`);
        } catch (err) {
          log(`controller log (tail):\n${node.controller.log().slice(-4000)}`);
          await node.stop().catch((e: unknown) => log(`stopping the node failed too: ${(e as Error).message}`));
          throw err;
        }
        await node.stop();
        log(describeRun(mode, run));
        runs.push(run);
      }
    }
    const medianOf = (name: RolloutModeName): number => median(runs.filter((r) => r.mode === name).map((r) => r.seconds));
    const medians = Object.fromEntries(ROLLOUT_MODES.map((m) => [m.name, medianOf(m.name)])) as Record<RolloutModeName, number>;
    return {
      date: new Date(),
      command: 'node dist/bench/run.js rollout',
      repeat,
      replicas,
      maxUnavailable: MAX_UNAVAILABLE,
      images: app,
      runs,
      medians,
      lazyInPlaceRatio: medians['inplace-lazypull'] / medians['recreate-overlayfs'],
      overlayInPlaceRatio: medians['inplace-overlayfs'] / medians['recreate-overlayfs'],
      versions: { containerd: await toolVersion('containerd', ['--version']), runc: await toolVersion('runc', ['--version']) },
      partial: modes.length < ROLLOUT_MODES.length,
    };
  });
}
