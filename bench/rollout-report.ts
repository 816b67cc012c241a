/** The rollout benchmark's results as terminal lines and as its section of docs/benchmarks.md. */
import { cpus } from 'node:os';
import { resolveIntOrPercent } from '../src/controller/int-or-percent';
import { median } from './bench-util';
import { ROLLOUT_MODES, type RolloutMode, type RolloutResults, type RolloutRun } from './rollout';
import type { RolloutTimeline } from './rollout-timeline';

const TARGET_RATIO = 0.2;
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);
const s = (seconds: number | undefined): string => (seconds === undefined || Number.isNaN(seconds) ? '–' : seconds.toFixed(2));

function table(header: string[], rows: string[][]): string {
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function runsOf(r: RolloutResults, mode: RolloutMode): RolloutRun[] {
  return r.runs.filter((run) => run.mode === mode.name);
}

function medianOf(runs: RolloutRun[], pick: (run: RolloutRun) => number | undefined): number | undefined {
  const values = runs.map(pick).filter((v): v is number => v !== undefined);
  return values.length > 0 ? median(values) : undefined;
}

const HEADER = ['mode', 'updateStrategy.type', 'images, CRI snapshotter', 'apply → all updated and ready, s (median)', 'each run, s', '× (c)'];

function rows(r: RolloutResults): string[][] {
  const c = r.medians['recreate-overlayfs'];
  return ROLLOUT_MODES.map((m) => [
    `${m.label} ${m.title}`,
    `\`${m.type}\``,
    m.images === 'estargz' ? 'eStargz, lazypull' : 'gzip, overlayfs',
    `**${s(r.medians[m.name])}**`,
    runsOf(r, m).map((x) => s(x.seconds)).join(', '),
    (r.medians[m.name] / c).toFixed(3),
  ]);
}

const PHASES: Array<[string, (run: RolloutRun) => number | undefined]> = [
  ['controller stored the apply', (run) => run.timeline.applied],
  ['apply CLI returned', (run) => run.applySeconds],
  ['v2 pulled (pre-warm done)', (run) => run.timeline.prewarmed],
  ['first pod touched', (run) => run.timeline.firstTouched],
  ['last pod replaced/recreated', (run) => run.timeline.lastReplaced],
  ['first pod ready', (run) => run.podReadySeconds[0]],
  ['all pods ready', (run) => run.seconds],
];

function phaseRows(r: RolloutResults): string[][] {
  return PHASES.map(([name, pick]) => [name, ...ROLLOUT_MODES.map((m) => s(medianOf(runsOf(r, m), pick)))]);
}

function pullAndReplaceRows(r: RolloutResults): string[][] {
  const pick = (run: RolloutRun, f: (t: RolloutTimeline) => number[] | number | undefined): number | undefined => {
    const v = f(run.timeline);
    return Array.isArray(v) ? (v.length > 0 ? median(v) : undefined) : v;
  };
  return [
    ['pre-warm pull of v2 (CRI PullImage)', ...ROLLOUT_MODES.map((m) => s(medianOf(runsOf(r, m), (run) => pick(run, (t) => t.pullSeconds))))],
    ['one pod: update start → new containers running', ...ROLLOUT_MODES.map((m) => s(medianOf(runsOf(r, m), (run) => pick(run, (t) => t.replaceSeconds))))],
    ['one pod: update start → ready again (in place: gate opened)', ...ROLLOUT_MODES.map((m) => s(medianOf(runsOf(r, m), (run) => pick(run, (t) => t.upgradeSeconds))))],
    ['one pod: app start-up in the new container (start → ready file written)', ...ROLLOUT_MODES.map((m) => s(medianOf(runsOf(r, m), (run) => median(run.appStartSeconds))))],
  ];
}

function lazyFacts(r: RolloutResults): string {
  const lazy = r.runs.filter((run) => run.lazyLayers !== undefined);
  if (lazy.length === 0) return '';
  const fetched = median(lazy.map((run) => run.fetchedBytes ?? 0));
  const shared =
    r.images.appLayer === 'vendored'
      ? ` Most of v2's top layer is v1's, file for file (the vendored dependencies): the layer server finds those chunks by their digests in the node's chunk cache, filled by v1's background fetch, so only the changed files come from the registry. The overlayfs modes download the whole ${mb(r.images.gzipTopBytes)} MB layer and unpack it again: containerd shares layers, not files.`
      : '';
  return `In (a) the snapshotter mounted ${lazy[0]!.lazyLayers} layer(s) of v2 lazily (its top layer; the base layer is v1's, already mounted), whose servers fetched ${(fetched / 1e3).toFixed(1)} kB of file contents (median).${shared}`;
}

export function renderRolloutTerminal(r: RolloutResults): string {
  const header = ['phase (median s since the apply began)', ...ROLLOUT_MODES.map((m) => m.label)];
  return [
    `rollout of ${r.replicas} replicas, top layer changed (maxUnavailable ${r.maxUnavailable}); median of ${r.repeat}`,
    ...(r.images.rootfs.source === 'synthetic' ? [`NOTE: synthetic base image: ${r.images.rootfs.fallbackReason ?? 'the Debian mirror was unreachable'}`] : []),
    '',
    table(HEADER, rows(r)),
    '',
    table(header, [...phaseRows(r), ...pullAndReplaceRows(r)]),
    '',
    `(a)/(c): ${r.lazyInPlaceRatio.toFixed(3)} (target <= ${TARGET_RATIO}); (b)/(c): ${r.overlayInPlaceRatio.toFixed(3)}`,
  ].join('\n');
}

function topLayer(img: RolloutResults['images']): string {
  const size = `${mb(img.topTarBytes)} MB unpacked, ${mb(img.gzipTopBytes)} MB gzip, ${mb(img.estargzTopBytes)} MB eStargz`;
  if (img.appLayer === 'code-only') return `a top layer with only \`/app/server.py\` and \`/app/VERSION\` (${img.gzipTopBytes} B gzip, ${img.estargzTopBytes} B eStargz).`;
  return (
    `a top layer with the app's code (\`/app/server.py\`, \`/app/VERSION\`) and its vendored dependencies (${size}): ` +
    `${img.vendoredFiles} files under \`/app/vendor/usr/\` copied from the base root filesystem (its Python modules, shared libraries and ` +
    `message catalogues) as stand-ins for what \`pip install --target /app/vendor\` would put in an app's layer, so that the layer ` +
    `that changes with every release is as large as a typical Python service's (\`LAZYPULL_BENCH_APP_LAYER=code-only\` runs the same benchmark with a code-only top layer).`
  );
}

export function renderRolloutMarkdown(r: RolloutResults): string {
  const cpu = cpus();
  const img = r.images;
  const met = r.lazyInPlaceRatio <= TARGET_RATIO ? 'met' : 'not met';
  const synthetic =
    img.rootfs.source === 'synthetic'
      ? `\n**The base image is synthetic**: ${img.rootfs.fallbackReason ?? 'the Debian mirror was unreachable'}.\n`
      : '';
  return `## Rollout: N replicas, a new version that changes only the top layer, apply → all updated and ready

Measured by \`${r.command}\` on ${r.date.toISOString().slice(0, 10)} (${r.date.toISOString()}), median of ${r.repeat} run(s) per mode, the three modes
in turn in one run. Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}; ${Object.entries(r.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}.
${synthetic}
App image: base layer = the cold-start benchmark's root filesystem (${img.rootfs.description}, ${mb(img.rootfs.tarSize)} MB unpacked,
${mb(img.gzipBaseBytes)} MB gzip, ${mb(img.estargzBaseBytes)} MB eStargz), plus ${topLayer(img)}
v1 and v2 differ only in that top layer (the version string in the app's code); the base
layer is the same blob in both. Container: \`python3 /app/server.py\`, which ${img.appLayer === 'vendored' ? 'imports \`json\` from its vendored copy, ' : ''}writes its version to \`/tmp/ready\` and waits for SIGTERM;
readiness probe \`exec: cat /tmp/ready\`, \`periodSeconds: 1\`. eStargz images: \`lazypull convert --prioritize\` with the
${img.prioritized} start-up paths (python3's, as in the cold-start benchmark, plus the app's files).

${r.replicas} replicas, \`maxUnavailable: ${r.maxUnavailable}\` (${resolveIntOrPercent(r.maxUnavailable, r.replicas, true)} pods at a time: with \`maxSurge: 0\` a percentage rounds up), \`inPlaceUpdateStrategy.gracePeriodSeconds: 0\`, the same in every mode.

${table(HEADER, rows(r))}

**(a) / (c): ${r.lazyInPlaceRatio.toFixed(3)}**, (b) / (c): ${r.overlayInPlaceRatio.toFixed(3)} (lower is better; the target is (a) ≤ ${TARGET_RATIO} × (c): ${met}).

Where the time goes (medians, seconds since the apply began; from the controller's JSON log and its watch stream):

${table(['phase', ...ROLLOUT_MODES.map((m) => `${m.label} ${m.title}`)], [...phaseRows(r), ...pullAndReplaceRows(r)])}

${lazyFacts(r)}

- Every run starts a fresh node: its own containerd with the CRI plugin and a CNI bridge network, for (a) a new
  \`lazypull snapshotter\` (empty chunk cache, background fetch on, its default) as the CRI snapshotter with
  \`disable_snapshot_annotations = false\`, and \`lazypull controller\` (the CLI process) on the CRI socket. All nodes pull
  from one \`docker-registry\` on loopback.
- Not timed: applying v1 with \`lazypull rollout apply\` and waiting until all ${r.replicas} replicas are ready (for (a), also
  until the snapshotter's background fetch of v1's layers is done, as on a node that has run v1 for a while), then \`sync\`.
  Before the apply, CRI \`ImageStatus\` confirms that v2 is not on the node.
- Timed: from the start of \`lazypull rollout apply -f v2.yaml\` (the CLI process, Node start-up included) until the
  controller's watch stream (\`GET /clonesets/NAME?watch=1\`, what \`lazypull rollout status --watch\` follows) shows
  \`updatedReadyReplicas == readyReplicas == replicas\` at the new \`updateRevision\`, every pod ready. The stream
  sends each change as the controller makes it, so nothing polls during the run.
- Readiness is first probed when the new container's app goes quiet (its threads all asleep, no CPU used between two looks 4 ms
  apart, from /proc; src/util/process-quiet.ts); until the container has been ready once, a failed probe is retried every 0.05 s
  during the first half second and every 0.1 s for the rest of the first (or period, if shorter), then at intervals doubling up to
  \`periodSeconds\` (1 s), each retry also waiting for quiet (at most 0.25 s); after that, every period as a kubelet does.
  Intervals run from one probe's start to the next's (src/controller/readiness.ts).
- The controller pre-warms: it pulls v2 through CRI \`PullImage\` before it touches the first pod. With overlayfs the base
  layer is already unpacked on the node (v1 uses it), so (b) and (c) download and unpack only the top layer, as a real node
  would; with lazypull the top layer is mounted lazily and the base layer's mount is shared with v1.
- Each run is checked: every pod ends on the new revision and serves v2 (\`cat /tmp/ready\` through CRI exec); in (a) and (b)
  each pod kept its sandbox (and IP) and got a new app container; in (c) each pod has a new sandbox.

Reproduce: \`npm run build && node dist/bench/run.js rollout\` (as root; \`LAZYPULL_BENCH_REPEAT=N\`, default 5;
\`LAZYPULL_BENCH_REPLICAS=N\`, default 6). The base root filesystem is the cold-start benchmark's cached
\`$TMPDIR/lazypull-bench-cache/cold-start/rootfs.tar.gz\` (built once with debootstrap).
`;
}
