/**
 * Compare two layer tars (plain or gzip) by what a runtime would see after
 * extracting them, independently of lazypull's own tar code: GNU tar lists
 * and extracts both as root, then every path's lstat, link target, xattrs,
 * hardlink grouping and content hash are compared. eStargz bookkeeping
 * entries are ignored, so an original layer and its eStargz form compare equal.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, Stats } from 'node:fs';
import { lstat, mkdtemp, open, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Entries that only the eStargz format adds. */
export const ESTARGZ_ONLY_NAMES = ['stargz.index.json', '.prefetch.landmark', '.no.prefetch.landmark'];

export interface CompareOptions {
  /** Top-level names to ignore in both; defaults to ESTARGZ_ONLY_NAMES. */
  ignore?: string[];
}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    await fh.read(buf, 0, 2, 0);
    return buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/** `tar` reading the archive from stdin, gunzipped by `gzip -dc` when needed. */
async function tarFromFile(path: string, tarArgs: string[]): Promise<string> {
  const decompress = (await isGzip(path)) ? 'gzip -dc < "$1"' : 'cat < "$1"';
  const quoted = tarArgs.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const { stdout } = await execFileP('bash', ['-c', `set -o pipefail; ${decompress} | tar ${quoted} -f -`, 'bash', path], {
    maxBuffer: 256 * 1024 * 1024,
  });
  return stdout;
}

function normalizeName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

/** Entry names as GNU tar lists them (PAX/GNU long names resolved), normalized. */
export async function listTarNames(path: string): Promise<string[]> {
  const out = await tarFromFile(path, ['--list', '--numeric-owner']);
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map(normalizeName)
    .filter((n) => n !== '' && n !== '.');
}

/** The verbose listing, for messages and debugging. */
export async function listTarVerbose(path: string): Promise<string> {
  return tarFromFile(path, ['--list', '-vv', '--numeric-owner', '--full-time', '--xattrs', '--xattrs-include=*']);
}

async function extract(path: string, dest: string, ignore: string[]): Promise<void> {
  const excludes = ignore.flatMap((n) => [`--exclude=${n}`, `--exclude=./${n}`]);
  await tarFromFile(path, [
    '--anchored',
    ...excludes,
    '--no-anchored',
    '--xattrs',
    '--xattrs-include=*',
    '--numeric-owner',
    '--same-owner',
    '-xp',
    '-C',
    dest,
  ]);
}

interface PathInfo {
  st: Stats;
  linkTarget?: string;
  sha256?: string;
}

async function walk(root: string, rel = '', out = new Map<string, PathInfo>()): Promise<Map<string, PathInfo>> {
  for (const name of await readdir(join(root, rel))) {
    const childRel = rel === '' ? name : `${rel}/${name}`;
    const abs = join(root, childRel);
    const st = await lstat(abs);
    const info: PathInfo = { st };
    if (st.isSymbolicLink()) info.linkTarget = await readlink(abs);
    if (st.isFile()) info.sha256 = await hashFile(abs);
    out.set(childRel, info);
    if (st.isDirectory()) await walk(root, childRel, out);
  }
  return out;
}

async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** All xattrs of every path under root (python3: Node has no xattr API). */
async function readXattrs(root: string): Promise<Record<string, Record<string, string>>> {
  const script = `
import os, sys, json
root = sys.argv[1]; out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n); rel = os.path.relpath(p, root)
        try:
            names = os.listxattr(p, follow_symlinks=False)
        except OSError:
            continue
        if names:
            out[rel] = {k: os.getxattr(p, k, follow_symlinks=False).hex() for k in sorted(names)}
json.dump(out, sys.stdout)
`;
  const { stdout } = await execFileP('python3', ['-c', script, root], { maxBuffer: 64 * 1024 * 1024 });
  return JSON.parse(stdout) as Record<string, Record<string, string>>;
}

function kind(st: Stats): string {
  if (st.isFile()) return 'reg';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  return 'unknown';
}

/** Paths grouped by inode, for regular files with more than one link. */
function hardlinkGroups(tree: Map<string, PathInfo>): Map<string, string> {
  const byIno = new Map<number, string[]>();
  for (const [p, info] of tree) {
    if (info.st.isFile() && info.st.nlink > 1) byIno.set(info.st.ino, [...(byIno.get(info.st.ino) ?? []), p]);
  }
  const groupOf = new Map<string, string>();
  for (const paths of byIno.values()) {
    const key = paths.sort().join(' = ');
    for (const p of paths) groupOf.set(p, key);
  }
  return groupOf;
}

function compareTrees(
  a: Map<string, PathInfo>,
  b: Map<string, PathInfo>,
  xa: Record<string, Record<string, string>>,
  xb: Record<string, Record<string, string>>,
): string[] {
  const diffs: string[] = [];
  for (const p of a.keys()) if (!b.has(p)) diffs.push(`${p}: only in first`);
  for (const p of b.keys()) if (!a.has(p)) diffs.push(`${p}: only in second`);
  const ga = hardlinkGroups(a);
  const gb = hardlinkGroups(b);
  const octal = (n: number): string => '0' + n.toString(8);
  for (const [p, ia] of a) {
    const ib = b.get(p);
    if (ib === undefined) continue;
    const sa = ia.st;
    const sb = ib.st;
    const check = (field: string, va: unknown, vb: unknown): void => {
      if (va !== vb) diffs.push(`${p}: ${field} ${String(va)} != ${String(vb)}`);
    };
    check('type', kind(sa), kind(sb));
    if (kind(sa) !== kind(sb)) continue;
    if (!sa.isSymbolicLink()) check('mode', octal(sa.mode & 0o7777), octal(sb.mode & 0o7777));
    check('uid', sa.uid, sb.uid);
    check('gid', sa.gid, sb.gid);
    check('mtime', Math.floor(sa.mtimeMs / 1000), Math.floor(sb.mtimeMs / 1000));
    if (sa.isCharacterDevice() || sa.isBlockDevice()) check('rdev', sa.rdev, sb.rdev);
    if (sa.isFile()) {
      check('size', sa.size, sb.size);
      check('sha256', ia.sha256, ib.sha256);
      check('hardlinks', ga.get(p) ?? '(none)', gb.get(p) ?? '(none)');
    }
    check('link target', ia.linkTarget, ib.linkTarget);
    check('xattrs', JSON.stringify(xa[p] ?? {}), JSON.stringify(xb[p] ?? {}));
  }
  return diffs;
}

/**
 * Differences between two layer tars, one line each; empty when a runtime
 * would see the same file system from both.
 */
export async function compareTars(first: string, second: string, opts: CompareOptions = {}): Promise<string[]> {
  const ignore = opts.ignore ?? ESTARGZ_ONLY_NAMES;
  const diffs: string[] = [];
  // Listing level: each name exactly once (a duplicate would be shadowed on extraction).
  const [na, nb] = await Promise.all([listTarNames(first), listTarNames(second)]);
  for (const [label, names] of [['first', na], ['second', nb]] as const) {
    const seen = new Set<string>();
    for (const n of names) {
      if (seen.has(n)) diffs.push(`${n}: listed twice in ${label}`);
      seen.add(n);
    }
  }
  const dir = await mkdtemp(join(tmpdir(), 'lzp-tarcmp-'));
  try {
    const da = join(dir, 'a');
    const db = join(dir, 'b');
    await execFileP('mkdir', [da, db]);
    await extract(first, da, ignore);
    await extract(second, db, ignore);
    const [ta, tb, xa, xb] = await Promise.all([walk(da), walk(db), readXattrs(da), readXattrs(db)]);
    diffs.push(...compareTrees(ta, tb, xa, xb));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return diffs;
}
