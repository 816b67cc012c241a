/** Render benchmark results as a terminal table and as docs/benchmarks.md. */
import { cpus } from 'node:os';
import { BenchLayer } from './bench-layer';
import { CodecRow } from './gzip-micro';
import { Timing } from './timed-command';

export interface ConvertRow extends Timing {
  tool: 'lazypull' | 'ctr-remote';
  level: number;
  outputBytes: number;
}

export interface BenchResults {
  date: Date;
  command: string;
  layer: BenchLayer;
  converts: ConvertRow[];
  /** Why a converter has no rows (e.g. not installed). */
  missing: string[];
  codecs: CodecRow[];
  codecSampleBytes: number;
  versions: Record<string, string>;
}

const mb = (bytes: number): string => (bytes / 1e6).toFixed(1);

function table(header: string[], rows: string[][]): string {
  const lines = [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`);
  return lines.join('\n');
}

function convertRows(r: BenchResults): string[][] {
  return r.converts.map((c) => {
    const mbps = r.layer.tarSize / 1e6 / c.wallSec;
    const other = r.converts.find((o) => o.tool !== c.tool && o.level === c.level);
    // lazypull / ctr-remote throughput: > 1 means lazypull is faster.
    const ratio = other === undefined ? '' : c.tool === 'lazypull' ? (other.wallSec / c.wallSec).toFixed(2) : '';
    return [
      c.tool,
      String(c.level),
      c.wallSec.toFixed(2),
      mbps.toFixed(1),
      c.cpuSec.toFixed(2),
      mb(c.outputBytes),
      ratio,
    ];
  });
}

export function renderTerminal(r: BenchResults): string {
  const conv = table(['converter', 'level', 'wall s', 'MB/s (uncompressed in)', 'CPU s', 'output MB', 'lazypull/ctr-remote'], convertRows(r));
  const codec = table(
    ['operation', 'node:zlib MB/s', 'pako MB/s', 'zlib/pako', 'note'],
    r.codecs.map((c) => [c.operation, c.zlibMBps.toFixed(1), c.pakoMBps.toFixed(1), c.ratio.toFixed(2), c.note]),
  );
  return [`layer: ${mb(r.layer.tarSize)} MB tar, ${mb(r.layer.gzSize)} MB gz, ${r.layer.entries} entries`, '', conv, ...r.missing.map((m) => `(${m})`), '', codec].join('\n');
}

/** The conversion section of docs/benchmarks.md. */
export function renderMarkdown(r: BenchResults): string {
  const cpu = cpus();
  return `## Conversion

Measured by \`${r.command}\` on ${r.date.toISOString().slice(0, 10)} (${r.date.toISOString()}).
Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}; ${Object.entries(r.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}.

### eStargz conversion of one layer

Input: one layer built from this machine's system files (\`/usr/bin\`, \`/usr/lib\`, \`/usr/share\` …, no network):
${mb(r.layer.tarSize)} MB uncompressed tar, ${mb(r.layer.gzSize)} MB as \`gzip -6\`, ${r.layer.entries} entries. Both converters read the
tar.gz and write an eStargz blob at the same gzip level and the default 4 MiB chunk size.

- lazypull: \`lazypull convert-layer layer.tar.gz out --level N --json\` (whole CLI process, Node start-up included).
- ctr-remote: \`ctr-remote image convert --estargz --oci --estargz-compression-level N SRC DST\` against a private containerd
  that already holds the image (the import is setup and not timed; the convert reads from and writes to containerd's content store).

Throughput is uncompressed input bytes per wall-clock second. CPU s is user + sys of the converter process and its children
(for ctr-remote, containerd's own work on the content store is not included). The last column is lazypull's throughput divided by
ctr-remote's at the same level: above 1 means lazypull is faster.

${table(['converter', 'level', 'wall s', 'MB/s', 'CPU s', 'output MB', 'lazypull/ctr-remote'], convertRows(r))}
${r.missing.map((m) => `\n_${m}_`).join('')}

### Codec micro-benchmark: node:zlib vs pako

The first ${mb(r.codecSampleBytes)} MB of the same uncompressed layer, compressed and decompressed in memory in one thread,
best of 3. MB/s of uncompressed data; zlib/pako above 1 means node:zlib is faster.

${table(
    ['operation', 'node:zlib MB/s', 'pako MB/s', 'zlib/pako', 'note'],
    r.codecs.map((c) => [c.operation, c.zlibMBps.toFixed(1), c.pakoMBps.toFixed(1), c.ratio.toFixed(2), c.note]),
  )}

### Reproduce

\`\`\`sh
npm run bench    # = npm run build && node dist/bench/run.js (conversion, then cold start)
node dist/bench/run.js convert   # the conversion benchmarks alone
\`\`\`
Needs root (a private containerd for ctr-remote), \`containerd\`, \`ctr\` and \`ctr-remote\` (Debian \`stargz-snapshotter\`).
The input layer is cached in \`$TMPDIR/lazypull-bench-cache\` (override with \`LAZYPULL_BENCH_CACHE\`); the first run builds it.
\`LAZYPULL_BENCH_REPEAT=N\` keeps the fastest of N runs per converter and level.
`;
}
