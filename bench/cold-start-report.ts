/** The cold-start benchmark's results as terminal lines and as its section of docs/benchmarks.md. */
import { cpus } from 'node:os';
import { median } from './bench-util';
import type { ColdStartResults, ColdStartRun } from './cold-start';
import { STARTUP_PHASES } from './startup-phases';

const TARGET_RATIO = 0.07;
const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);
const s = (seconds: number): string => seconds.toFixed(2);

function table(header: string[], rows: string[][]): string {
  return [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

function runsOf(r: ColdStartResults, mode: ColdStartRun['mode']): ColdStartRun[] {
  return r.runs.filter((run) => run.mode === mode);
}

function rows(r: ColdStartResults): string[][] {
  const full = runsOf(r, 'full');
  const lazy = runsOf(r, 'lazy');
  return [
    [
      'full pull (overlayfs)',
      '`ctr image pull --plain-http` + `ctr run`',
      `**${s(r.full.firstOutputSeconds)}**`,
      s(r.full.pullSeconds),
      full.map((x) => s(x.firstOutputSeconds)).join(', '),
      `${mb(r.image.plainBytes)} MB (100%)`,
    ],
    [
      'lazypull',
      '`lazypull pull` + `ctr run --snapshotter lazypull`',
      `**${s(r.lazy.firstOutputSeconds)}**`,
      s(r.lazy.pullSeconds),
      lazy.map((x) => s(x.firstOutputSeconds)).join(', '),
      `${mb(r.lazy.fetchedBytes)} MB (${(r.lazy.fetchedShare * 100).toFixed(1)}%)`,
    ],
  ];
}

const HEADER = ['mode', 'timed', 'first output s (median)', 'pull s (median)', 'each run: first output s', 'fetched of the image'];

export function renderColdStartTerminal(r: ColdStartResults): string {
  return [
    `cold start, ${r.image.rootfs.description}: ${mb(r.image.rootfs.tarSize)} MB unpacked, ${mb(r.image.plainBytes)} MB gzip; median of ${r.repeat}`,
    ...(r.image.rootfs.source === 'synthetic' ? [`NOTE: synthetic image: ${r.image.rootfs.fallbackReason ?? 'the Debian mirror was unreachable'}`] : []),
    '',
    table(HEADER, rows(r)),
    '',
    `lazypull/full time to first output: ${r.ratio.toFixed(3)} (lower is better; target <= ${TARGET_RATIO})`,
  ].join('\n');
}

export function renderColdStartMarkdown(r: ColdStartResults): string {
  const cpu = cpus();
  const img = r.image;
  const synthetic =
    img.rootfs.source === 'synthetic'
      ? `\n**The image is synthetic**: ${img.rootfs.fallbackReason ?? 'the Debian mirror was unreachable'}; it was packed from this machine's python3, its libraries and part of \`/usr\` instead of a debootstrap root filesystem.\n`
      : '';
  return `## Cold start: "run this image" on an empty node, to the container's first output

Measured by \`${r.command}\` on ${r.date.toISOString().slice(0, 10)} (${r.date.toISOString()}), median of ${r.repeat} runs each.
Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}; ${Object.entries(r.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}.
${synthetic}
Image: ${img.rootfs.description}: ${mb(img.rootfs.tarSize)} MB unpacked, ${mb(img.plainBytes)} MB as \`gzip -6\` (pushed as it is for the
full pull), ${mb(img.estargzBytes)} MB as eStargz (\`lazypull convert --prioritize\` with the ${img.rootfs.startupFiles.length} files python3 opens at
start-up, found with ${img.rootfs.startupFilesFrom === 'strace' ? '`strace -f -e trace=open,openat,execve` of `chroot ROOTFS python3 -c …`' : 'a fixed list'}, plus the dynamic loader).
Container command: \`python3 -c 'print("ready")'\`; both images are served by a \`docker-registry\` on loopback.

${table(HEADER, rows(r))}

**lazypull / full pull: ${r.ratio.toFixed(3)}** (time to first output; lower is better; the target is ≤ ${TARGET_RATIO}).

Where a lazy start spends its time (median seconds since the pull began, from the \`LAZYPULL_TRACE\` timestamps of the pull CLI,
the snapshotter and its layer servers):

${phaseTable(r)}

- Every run starts from an empty node: a new containerd root, and for lazypull a new \`lazypull snapshotter\` daemon with an
  empty chunk cache, background fetch off (so "fetched" is what start-up needed: the prefetched start-up files plus what
  the container read). Starting the daemons is not timed.
- Timed from the start of the pull command to the first byte the container writes to \`ctr run\`'s stdout.
  \`lazypull pull\` is the CLI process a user runs (Node start-up included); it asks the snapshotter daemon to pull
  (\`--snapshotter-address\`: the daemon's socket is in the run's temp dir, on a node it is the default one), which
  resolves the image and prepares each layer through containerd; the snapshotter mounts each eStargz layer with a
  per-layer \`lazypull mount\` server, which fetches the footer and TOC, then prefetches the start-up files.
- "fetched" is the compressed bytes of file contents the layer servers fetched (their \`fetchedBytes\`) against the eStargz
  image's compressed size. Footer and TOC, read once per layer at mount, add ${mb(img.tocBytes)} MB
  (${(((r.lazy.fetchedBytes + img.tocBytes) / img.estargzBytes) * 100).toFixed(1)}% of the image with them).
- The full pull's time is almost all containerd unpacking ${mb(img.rootfs.tarSize)} MB of files and varies with the disk's state (see each
  run; on this VM the first pulls after an idle spell are faster); the lazy runs are steady.

Reproduce: \`npm run build && node dist/bench/run.js cold-start\` (as root; \`LAZYPULL_BENCH_REPEAT=N\`, default 3).
The root filesystem is built once with \`debootstrap --variant=minbase bookworm\` + \`chroot … apt-get install python3\`
and cached as \`$TMPDIR/lazypull-bench-cache/cold-start/rootfs.tar.gz\` (\`LAZYPULL_BENCH_CACHE\` moves the cache).
`;
}

/** Median time of each start-up phase over the lazy runs. */
function phaseTable(r: ColdStartResults): string {
  const lazies = r.runs.filter((run) => run.phases !== undefined);
  const phases = [...STARTUP_PHASES, { event: 'pull exited', label: '`lazypull pull` exited; `ctr run` starts' }, { event: 'first output', label: 'the container printed its first byte' }];
  const rows = phases
    .map(({ event, label }) => {
      const values = lazies.map((run) => run.phases![event]).filter((v): v is number => v !== undefined);
      return values.length === 0 ? undefined : [label, `\`${event}\``, median(values).toFixed(3)];
    })
    .filter((row): row is string[] => row !== undefined);
  return table(['phase', 'trace event', 's'], rows);
}
