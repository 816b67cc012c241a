/**
 * Helpers for tests of `lazypull mount`: publish layers to a loopback
 * registry, run the mount command as its own process (the FUSE server must
 * never be the process that reads the mount), dump a directory tree with
 * python3 in a child process, and compare a mount with a tar extraction.
 * Every mount process started here is killed, and its mount detached, when
 * the test process exits, even after a failure.
 */
import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { S_IFCHR, S_IFDIR } from '../../src/fs/layer-index';
import { cleanupOnExit } from '../../src/sandbox/exit-cleanup';
import { RegistryClient } from '../../src/registry/client';
import { parseReference, withDigest, type ImageReference } from '../../src/registry/reference';
import { CLI_PATH, runCliOk } from './cli';
import { buildOciLayout, type LayerSpec } from './oci-image';

export const execFileP = promisify(execFile);

// ---------------------------------------------------------------- publishing

export interface PublishedImage {
  /** "HOST/REPO:TAG" of the converted (eStargz) image. */
  ref: string;
  /** Converted layer digests, in order. */
  layers: string[];
  /** Original tar.gz of each layer (what system tar extracts for comparison). */
  originals: string[];
  /** The OCI layout holding the original image. */
  layoutDir: string;
}

/** Build an image from layer specs in `dir`, convert it with `lazypull convert` and push it to `host`. */
export async function publishConverted(
  dir: string,
  host: string,
  repoTag: string,
  layers: LayerSpec[],
  env: NodeJS.ProcessEnv = {},
  convertArgs: string[] = [],
): Promise<PublishedImage> {
  const built = await buildOciLayout(dir, { layers, config: {}, tag: 'src' });
  const ref = `${host}/${repoTag}`;
  const { stdout } = await runCliOk(['convert', `oci:${dir}:src`, ref, '--plain-http', '--json', ...convertArgs], { env, timeoutMs: 120_000 });
  const result = JSON.parse(stdout) as { manifests: Array<{ layers: Array<{ digest: string }> }> };
  return { ref, layers: result.manifests[0].layers.map((l) => l.digest), originals: built.layers.map((l) => l.blobPath), layoutDir: dir };
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Push the single image of an OCI layout as it is (no conversion) to `ref`. */
export async function pushOciLayout(client: RegistryClient, layoutDir: string, ref: ImageReference): Promise<{ layers: Descriptor[] }> {
  const blobPath = (digest: string): string => join(layoutDir, 'blobs', 'sha256', digest.slice(7));
  const index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifestDesc = index.manifests[0];
  const manifestBody = await readFile(blobPath(manifestDesc.digest));
  const manifest = JSON.parse(manifestBody.toString()) as { config: Descriptor; layers: Descriptor[] };
  for (const d of [manifest.config, ...manifest.layers]) {
    const data = await readFile(blobPath(d.digest));
    await client.pushBlob(ref, d.digest, data.length, () => Readable.from([data]));
  }
  await client.putManifest(ref, manifestDesc.mediaType, manifestBody);
  return { layers: manifest.layers };
}

/** Re-publish the manifest of `src` under `dstTag` with each layer's annotations changed by `edit`. */
export async function retagWithAnnotations(
  client: RegistryClient,
  src: string,
  dstTag: string,
  edit: (annotations: Record<string, string>, layerIndex: number) => void,
): Promise<string> {
  const ref = parseReference(src);
  const fetched = await client.getManifest(ref);
  const manifest = JSON.parse(fetched.body.toString()) as { layers: Descriptor[] };
  manifest.layers.forEach((l, i) => {
    l.annotations = { ...(l.annotations ?? {}) };
    edit(l.annotations, i);
  });
  const dst = { registry: ref.registry, repository: ref.repository, tag: dstTag };
  await client.putManifest(dst, fetched.mediaType, Buffer.from(JSON.stringify(manifest)));
  return `${ref.registry}/${ref.repository}:${dstTag}`;
}

export { withDigest };

// ---------------------------------------------------------------- mount processes

export interface MountProcess {
  child: ChildProcess;
  mountpoint: string;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, wait for exit (SIGKILL + lazy unmount after `ms`); the exit code (null if killed). */
  stop(ms?: number): Promise<number | null>;
  /** SIGKILL without any cleanup: leaves a stale mount behind. */
  kill9(): Promise<void>;
  exited(): boolean;
}

const running = new Set<MountProcess>();

cleanupOnExit(() => {
  for (const m of running) {
    try {
      m.child.kill('SIGKILL');
    } catch {
      // gone
    }
    try {
      execFileSync('umount', ['-l', '-c', m.mountpoint], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
  }
});

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export interface StartMountResult {
  mount: MountProcess;
  /** True when the process printed its "mounted" line; false when it exited first. */
  mounted: boolean;
  code: number | null;
}

/**
 * `lazypull mount ARGS...` as a child process; resolves once it prints its
 * "mounted" line, or exits (refused), or after `timeoutMs` (throws).
 */
export async function startMount(args: string[], mountpoint: string, opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<StartMountResult> {
  const child = spawn(process.execPath, [CLI_PATH, 'mount', ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const mount: MountProcess = {
    child,
    mountpoint,
    stdout: () => out,
    stderr: () => err,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    async stop(ms = 15_000) {
      if (!mount.exited()) child.kill('SIGTERM');
      if (!(await waitExit(child, ms))) {
        child.kill('SIGKILL');
        await waitExit(child, 5000);
      }
      running.delete(mount);
      await lazyUnmount(mountpoint);
      return child.exitCode;
    },
    async kill9() {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    },
  };
  running.add(mount);
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    if (/^mounted /m.test(out) || /"event":"mounted"/.test(out)) return { mount, mounted: true, code: null };
    if (mount.exited()) {
      running.delete(mount);
      return { mount, mounted: false, code: child.exitCode };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await mount.stop(2000);
  throw new Error(`lazypull mount did not mount within the timeout; stderr: ${err}`);
}

/** Mounts whose mount point is `mountpoint` (from /proc/self/mountinfo, read without touching the mount). */
export async function mountsAt(mountpoint: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const decode = (s: string): string => Buffer.from(s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [left, right] = l.split(' - ');
      return { mp: decode(left.split(' ')[4]), fstype: right.split(' ')[0] };
    })
    .filter((m) => m.mp === mountpoint)
    .map((m) => m.fstype);
}

/** Detach anything mounted at `mountpoint` (overlay or FUSE); no error if nothing is. */
export async function lazyUnmount(mountpoint: string): Promise<void> {
  for (let i = 0; i < 8 && (await mountsAt(mountpoint)).length > 0; i++) {
    await execFileP('umount', ['-l', '-c', mountpoint]).catch(() => undefined);
  }
}

/** Every mount under `dir` (for after hooks: nothing may be left mounted). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[4])
    .filter((mp) => mp === dir || mp.startsWith(`${dir}/`));
}

// ---------------------------------------------------------------- trees

export interface TreeEntry {
  /** S_IFMT bits */
  type: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  nlink: number;
  rdev: [number, number];
  ino: number;
  link?: string;
  sha256?: string;
  /** name -> hex value */
  xattrs: Record<string, string>;
}

export type Tree = Record<string, TreeEntry>;

const DUMP_TREE_PY = String.raw`
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
def name(rel):
    return os.fsencode(rel).decode('utf-8', 'backslashreplace')
def visit(rel):
    p = os.path.join(root, rel) if rel else root
    st = os.lstat(p)
    e = {'type': stat.S_IFMT(st.st_mode), 'mode': stat.S_IMODE(st.st_mode), 'uid': st.st_uid, 'gid': st.st_gid,
         'size': st.st_size, 'mtime': int(st.st_mtime), 'nlink': st.st_nlink,
         'rdev': [os.major(st.st_rdev), os.minor(st.st_rdev)], 'ino': st.st_ino}
    if stat.S_ISLNK(st.st_mode):
        e['link'] = name(os.readlink(p))
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
        e['sha256'] = h.hexdigest()
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        names = []
    e['xattrs'] = {k: os.getxattr(p, k, follow_symlinks=False).hex() for k in sorted(names)}
    out[name(rel)] = e
    if stat.S_ISDIR(st.st_mode):
        for n in sorted(os.listdir(p)):
            visit(os.path.join(rel, n) if rel else n)
visit('')
json.dump(out, sys.stdout)
`;

/** lstat, content hash, link target and xattrs of every path under `root`, read by python3 in a child process. */
export async function dumpTree(root: string, timeoutMs = 120_000): Promise<Tree> {
  const { stdout } = await execFileP('python3', ['-c', DUMP_TREE_PY, root], { maxBuffer: 256 << 20, timeout: timeoutMs });
  return JSON.parse(stdout) as Tree;
}

/** System tar as root: `tar --xattrs --xattrs-include='*' --numeric-owner -xpf` (gzip detected by tar). */
export async function extractWithTar(archive: string, dest: string): Promise<void> {
  await execFileP('mkdir', ['-p', dest]);
  await execFileP('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', archive, '-C', dest], { maxBuffer: 64 << 20 });
}

const OPAQUE_HEX = Buffer.from('y').toString('hex');
const ESTARGZ_ONLY = new Set(['stargz.index.json', '.prefetch.landmark', '.no.prefetch.landmark']);

/**
 * What an overlayfs lower layer shows for an extracted tar: `.wh.NAME`
 * becomes a 0/0 character device NAME with the whiteout's attributes, and
 * `.wh..wh..opq` disappears, marking its directory opaque.
 */
export function asOverlayLower(extracted: Tree): Tree {
  const out: Tree = {};
  for (const [path, e] of Object.entries(extracted)) {
    const slash = path.lastIndexOf('/');
    const dir = slash < 0 ? '' : path.slice(0, slash);
    const base = path.slice(slash + 1);
    if (dir === '' && ESTARGZ_ONLY.has(base)) continue;
    if (base === '.wh..wh..opq') continue;
    if (base.startsWith('.wh.')) {
      const shown = dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`;
      out[shown] = { ...e, type: S_IFCHR, size: 0, rdev: [0, 0], nlink: 1, sha256: undefined };
      delete out[shown].sha256;
      continue;
    }
    out[path] = { ...e, xattrs: { ...e.xattrs } };
  }
  for (const path of Object.keys(extracted)) {
    if (path === '.wh..wh..opq' || path.endsWith('/.wh..wh..opq')) {
      const dir = path.slice(0, Math.max(0, path.length - '/.wh..wh..opq'.length));
      const target = out[path === '.wh..wh..opq' ? '' : dir];
      if (target) target.xattrs['trusted.overlay.opaque'] = OPAQUE_HEX;
    }
  }
  return out;
}

function hardlinkGroups(tree: Tree): Map<string, string> {
  const byIno = new Map<number, string[]>();
  for (const [p, e] of Object.entries(tree)) {
    if (e.type !== S_IFDIR && e.nlink > 1) byIno.set(e.ino, [...(byIno.get(e.ino) ?? []), p]);
  }
  const groupOf = new Map<string, string>();
  for (const paths of byIno.values()) {
    const key = paths.sort().join(' = ');
    for (const p of paths) groupOf.set(p, key);
  }
  return groupOf;
}

/**
 * Differences between an expected tree and a mounted one, one line each.
 * The root itself and directory sizes (file-system specific) are not compared.
 */
export function compareTrees(expected: Tree, actual: Tree): string[] {
  const diffs: string[] = [];
  for (const p of Object.keys(expected)) if (p !== '' && !(p in actual)) diffs.push(`${p}: missing from the mount`);
  for (const p of Object.keys(actual)) if (p !== '' && !(p in expected)) diffs.push(`${p}: only in the mount`);
  const ge = hardlinkGroups(expected);
  const ga = hardlinkGroups(actual);
  const oct = (n: number): string => `0${n.toString(8)}`;
  for (const [p, e] of Object.entries(expected)) {
    const a = actual[p];
    if (p === '' || a === undefined) continue;
    const check = (field: string, ve: unknown, va: unknown): void => {
      const se = JSON.stringify(ve);
      const sa = JSON.stringify(va);
      if (se !== sa) diffs.push(`${p}: ${field} ${se} != ${sa}`);
    };
    check('type', oct(e.type), oct(a.type));
    if (e.type !== a.type) continue;
    check('mode', oct(e.mode), oct(a.mode));
    check('uid', e.uid, a.uid);
    check('gid', e.gid, a.gid);
    check('mtime', e.mtime, a.mtime);
    check('nlink', e.nlink, a.nlink);
    if (e.type !== S_IFDIR) check('size', e.size, a.size);
    check('rdev', e.rdev, a.rdev);
    check('sha256', e.sha256, a.sha256);
    check('link', e.link, a.link);
    check('xattrs', e.xattrs, a.xattrs);
    check('hardlinks', ge.get(p) ?? '(none)', ga.get(p) ?? '(none)');
  }
  return diffs;
}
