/**
 * The benchmark input: one realistic layer (>= 200 MB uncompressed) made of
 * the machine's own system files, because a layer of real binaries, libraries
 * and text compresses like real images do and needs no network. Built once
 * and cached between runs.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const CACHE_VERSION = 3;
const MiB = 1024 * 1024;
/**
 * Payload quota per tree (tar headers and padding add a few percent): a mix of
 * shared libraries, text and executables like a real base image, rather than
 * whatever few huge binaries sort first. Unused quota moves to the next tree.
 */
const QUOTAS: Array<[string, number]> = [
  ['usr/lib', 90 * MiB],
  ['usr/share', 60 * MiB],
  ['usr/bin', 40 * MiB],
  ['usr/sbin', 5 * MiB],
  ['usr/libexec', 5 * MiB],
  ['usr/include', 5 * MiB],
];
const TARGET_BYTES = 195 * MiB;
/** Single files above this are left out, so one binary cannot dominate the layer. */
const MAX_FILE_BYTES = 24 * MiB;

export interface BenchLayer {
  /** gzip -6 tar.gz, the form layers come in from registries. */
  tarGzPath: string;
  /** Uncompressed tar size in bytes: the throughput denominator. */
  tarSize: number;
  gzSize: number;
  entries: number;
}

export function benchCacheDir(): string {
  return process.env.LAZYPULL_BENCH_CACHE ?? join(tmpdir(), 'lazypull-bench-cache');
}

/** Paths relative to /, in sorted walk order per tree, until each tree's quota is used. */
async function selectPaths(): Promise<string[]> {
  const picked: string[] = [];
  let total = 0;
  let carry = 0;
  for (const [root, quota] of QUOTAS) {
    const budget = Math.min(quota + carry, TARGET_BYTES - total);
    let used = 0;
    const visit = async (rel: string): Promise<boolean> => {
      let names: string[];
      try {
        names = (await readdir(join('/', rel))).sort();
      } catch {
        return true;
      }
      picked.push(rel);
      for (const name of names) {
        const childRel = `${rel}/${name}`;
        const st = await lstat(join('/', childRel)).catch(() => undefined);
        if (st === undefined) continue;
        if (st.isDirectory()) {
          if (!(await visit(childRel))) return false;
        } else if (st.isSymbolicLink() || (st.isFile() && st.size <= MAX_FILE_BYTES)) {
          picked.push(childRel);
          if (st.isFile()) used += st.size;
          if (used >= budget) return false;
        }
      }
      return true;
    };
    if (budget > 0) await visit(root);
    total += used;
    carry = Math.max(0, budget - used);
  }
  return picked;
}

export async function ensureBenchLayer(log: (line: string) => void): Promise<BenchLayer> {
  const dir = benchCacheDir();
  const metaPath = join(dir, 'layer.json');
  if (existsSync(metaPath)) {
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as BenchLayer & { version: number };
    if (meta.version === CACHE_VERSION && existsSync(meta.tarGzPath)) return meta;
  }
  await mkdir(dir, { recursive: true });
  log(`building the benchmark layer from system files into ${dir} (cached for later runs)`);
  const paths = await selectPaths();
  const listPath = join(dir, 'files.txt');
  await writeFile(listPath, paths.join('\n') + '\n');
  const tarPath = join(dir, 'layer.tar');
  const tarGzPath = join(dir, 'layer.tar.gz');
  await execFileP('tar', ['--numeric-owner', '--format=pax', '--no-recursion', '-C', '/', '-cf', tarPath, '-T', listPath]);
  const tarSize = (await stat(tarPath)).size;
  if (tarSize < 200 * 1024 * 1024) throw new Error(`benchmark layer only ${tarSize} bytes: not enough system files`);
  await execFileP('sh', ['-c', 'gzip -n -6 -c < "$1" > "$2"', 'sh', tarPath, tarGzPath]);
  await rm(tarPath);
  const layer: BenchLayer = { tarGzPath, tarSize, gzSize: (await stat(tarGzPath)).size, entries: paths.length };
  await writeFile(metaPath, JSON.stringify({ ...layer, version: CACHE_VERSION }, null, 2));
  return layer;
}

/** The first `bytes` of the uncompressed layer, as realistic data for codec micro-benchmarks. */
export async function layerSample(layer: BenchLayer, bytes: number): Promise<Buffer> {
  const { stdout } = await execFileP('bash', ['-c', `gzip -dc < "$1" | head -c ${bytes}`, 'bash', layer.tarGzPath], {
    encoding: 'buffer',
    maxBuffer: bytes + 1024,
  });
  return stdout;
}
