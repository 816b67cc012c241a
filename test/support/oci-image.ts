/**
 * Small runnable OCI images built on disk with no network. Layers are real
 * staging directories (mknod, chown, xattrs, hardlinks) archived by GNU tar,
 * so the tars are what a real image builder would produce and do not depend
 * on lazypull's own tar code. Needs root (devices, ownership, trusted.*).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  copyFile,
  link,
  lchown,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Seconds since the epoch used when an entry gives no mtime: builds are reproducible. */
export const DEFAULT_MTIME = 1_700_000_000;

interface Meta {
  /** Path inside the layer, without a leading slash (e.g. "app/hello.txt"). */
  path: string;
  /** Permission bits incl. setuid/setgid/sticky. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch. */
  mtime?: number;
  /** name -> value; names need their namespace (`user.`, `trusted.`, `security.`). */
  xattrs?: Record<string, string | Buffer>;
}

export type LayerEntry =
  | (Meta & { type: 'file'; content: string | Buffer })
  | (Meta & { type: 'dir' })
  | (Meta & { type: 'symlink'; target: string })
  /** `target` is the layer path of an earlier regular file. */
  | { type: 'hardlink'; path: string; target: string }
  | (Meta & { type: 'char' | 'block'; major: number; minor: number })
  | (Meta & { type: 'fifo' })
  /** Deletes `path` of a lower layer (`.wh.<name>`). */
  | { type: 'whiteout'; path: string }
  /** Hides the lower contents of directory `path` (`.wh..wh..opq`). */
  | { type: 'opaque'; path: string };

export type LayerSpec =
  | { entries: LayerEntry[] }
  /** An already built tar.gz, used as is (e.g. the benchmark layer). */
  | { tarGzPath: string };

export interface ImageConfigSpec {
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workingDir?: string;
}

export interface BuiltLayer {
  digest: string;
  diffID: string;
  size: number;
  /** Path of the compressed blob inside the layout. */
  blobPath: string;
}

export interface BuiltImage {
  dir: string;
  tag: string;
  manifestDigest: string;
  configDigest: string;
  layers: BuiltLayer[];
}

export const MEDIA_TYPE_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const MEDIA_TYPE_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Node has no xattr API; python3 is on every machine of this kind. */
async function setXattrs(path: string, xattrs: Record<string, string | Buffer>): Promise<void> {
  const pairs = Object.entries(xattrs).map(([k, v]) => [k, Buffer.from(v).toString('hex')]);
  const script =
    'import os,sys,json\n' +
    'for k,v in json.loads(sys.argv[2]): os.setxattr(sys.argv[1], k, bytes.fromhex(v), follow_symlinks=False)\n';
  await execFileP('python3', ['-c', script, path, JSON.stringify(pairs)]);
}

async function ensureParent(root: string, path: string): Promise<void> {
  await mkdir(dirname(join(root, path)), { recursive: true, mode: 0o755 });
}

/** Populate `root` with the entries, then set ownership, modes, xattrs and finally times. */
export async function stageLayer(root: string, entries: LayerEntry[]): Promise<void> {
  const metas: Array<Meta & { isLink: boolean }> = [];
  for (const e of entries) {
    const abs = join(root, e.path);
    if (e.type !== 'dir') await ensureParent(root, e.path);
    switch (e.type) {
      case 'file':
        await writeFile(abs, e.content);
        break;
      case 'dir':
        await mkdir(abs, { recursive: true });
        break;
      case 'symlink':
        await symlink(e.target, abs);
        break;
      case 'hardlink':
        await link(join(root, e.target), abs);
        break;
      case 'char':
      case 'block':
        await execFileP('mknod', [abs, e.type === 'char' ? 'c' : 'b', String(e.major), String(e.minor)]);
        break;
      case 'fifo':
        await execFileP('mkfifo', [abs]);
        break;
      case 'whiteout': {
        const parts = e.path.split('/');
        const name = parts.pop() as string;
        const wh = join(root, ...parts, `.wh.${name}`);
        await writeFile(wh, '');
        metas.push({ path: join(...parts, `.wh.${name}`), mode: 0o644, isLink: false });
        break;
      }
      case 'opaque':
        await mkdir(abs, { recursive: true });
        await writeFile(join(abs, '.wh..wh..opq'), '');
        metas.push({ path: join(e.path, '.wh..wh..opq'), mode: 0o644, isLink: false });
        break;
    }
    if (e.type !== 'hardlink' && e.type !== 'whiteout' && e.type !== 'opaque') {
      metas.push({ ...e, isLink: e.type === 'symlink' });
    }
  }
  for (const m of metas) {
    const abs = join(root, m.path);
    await lchown(abs, m.uid ?? 0, m.gid ?? 0);
    // chmod after chown: chown clears setuid/setgid bits.
    if (!m.isLink) {
      const st = await stat(abs);
      const fallback = st.isDirectory() ? 0o755 : 0o644;
      await chmod(abs, m.mode ?? fallback);
    }
    if (m.xattrs && Object.keys(m.xattrs).length > 0) await setXattrs(abs, m.xattrs);
  }
  await setTimes(root, new Map(metas.map((m) => [m.path.replace(/\/+$/, ''), m.mtime ?? DEFAULT_MTIME])));
}

/** Times last and children before parents, since creating a child touches the parent. */
async function setTimes(root: string, explicit: Map<string, number>, rel = ''): Promise<void> {
  const dirents = await readdir(join(root, rel), { withFileTypes: true });
  for (const d of dirents) {
    const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
    if (d.isDirectory()) await setTimes(root, explicit, childRel);
    else {
      const t = explicit.get(childRel) ?? DEFAULT_MTIME;
      await lutimes(join(root, childRel), t, t);
    }
  }
  if (rel !== '') {
    const t = explicit.get(rel) ?? DEFAULT_MTIME;
    await lutimes(join(root, rel), t, t);
  }
}

/** GNU tar flags for a reproducible pax layer with all xattrs and numeric owners. */
export const TAR_CREATE_FLAGS = [
  '--xattrs',
  '--xattrs-include=*',
  '--numeric-owner',
  '--format=pax',
  '--pax-option=delete=atime,delete=ctime',
  '--sort=name',
];

/** Archive the contents of `root` (no "./" entry) into an uncompressed tar. */
export async function tarDirectory(root: string, outTar: string): Promise<void> {
  const top = (await readdir(root)).sort();
  if (top.length === 0) {
    await writeFile(outTar, Buffer.alloc(1024));
    return;
  }
  await execFileP('tar', [...TAR_CREATE_FLAGS, '-C', root, '-cf', outTar, '--', ...top]);
}

/** gzip -n: no name or time in the header, so equal input gives equal blobs. */
export async function gzipFile(inPath: string, outPath: string, level = 6): Promise<void> {
  await execFileP('sh', ['-c', `gzip -n -${level} -c < "$1" > "$2"`, 'sh', inPath, outPath]);
}

async function writeBlob(dir: string, data: Buffer | string): Promise<{ digest: string; size: number }> {
  const digest = sha256(data);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), data);
  return { digest, size: Buffer.byteLength(data) };
}

async function moveBlob(dir: string, path: string): Promise<BuiltLayer> {
  const digest = await sha256File(path);
  const blobPath = join(dir, 'blobs', 'sha256', digest.slice(7));
  await rename(path, blobPath);
  const { size } = await stat(blobPath);
  return { digest, size, blobPath, diffID: '' };
}

function ociArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };
  return map[process.arch] ?? process.arch;
}

export interface BuildOciLayoutOptions {
  layers: LayerSpec[];
  config: ImageConfigSpec;
  /** Tag stored as `org.opencontainers.image.ref.name` in index.json. */
  tag: string;
  /** Full reference also stored as `io.containerd.image.name` (for `ctr import`). */
  imageName?: string;
}

export async function buildOciLayout(dir: string, opts: BuildOciLayoutOptions): Promise<BuiltImage> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'lzp-oci-build-'));
  const layers: BuiltLayer[] = [];
  try {
    for (const [i, spec] of opts.layers.entries()) {
      let layer: BuiltLayer;
      if ('tarGzPath' in spec) {
        const tmp = join(dir, 'blobs', `.layer-${i}.tmp`);
        await copyFile(spec.tarGzPath, tmp);
        layer = await moveBlob(dir, tmp);
        const { stdout } = await execFileP('sh', ['-c', 'gzip -dc < "$1" | sha256sum', 'sh', spec.tarGzPath]);
        layer.diffID = `sha256:${stdout.split(' ')[0]}`;
      } else {
        const stage = join(work, `stage-${i}`);
        await mkdir(stage);
        await stageLayer(stage, spec.entries);
        const tarPath = join(work, `layer-${i}.tar`);
        await tarDirectory(stage, tarPath);
        const gzPath = join(dir, 'blobs', `.layer-${i}.tmp`);
        await gzipFile(tarPath, gzPath);
        layer = await moveBlob(dir, gzPath);
        layer.diffID = await sha256File(tarPath);
      }
      layers.push(layer);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  const config = {
    created: new Date(DEFAULT_MTIME * 1000).toISOString(),
    architecture: ociArch(),
    os: 'linux',
    config: {
      ...(opts.config.env ? { Env: opts.config.env } : { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] }),
      ...(opts.config.entrypoint ? { Entrypoint: opts.config.entrypoint } : {}),
      ...(opts.config.cmd ? { Cmd: opts.config.cmd } : {}),
      ...(opts.config.workingDir ? { WorkingDir: opts.config.workingDir } : {}),
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
    history: layers.map(() => ({ created: new Date(DEFAULT_MTIME * 1000).toISOString(), created_by: 'lazypull test fixture' })),
  };
  const configBlob = await writeBlob(dir, JSON.stringify(config));
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    config: { mediaType: MEDIA_TYPE_CONFIG, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((l) => ({ mediaType: MEDIA_TYPE_LAYER_GZIP, digest: l.digest, size: l.size })),
  };
  const manifestBlob = await writeBlob(dir, JSON.stringify(manifest));
  const annotations: Record<string, string> = { 'org.opencontainers.image.ref.name': opts.tag };
  if (opts.imageName) annotations['io.containerd.image.name'] = opts.imageName;
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_INDEX,
    manifests: [
      {
        mediaType: MEDIA_TYPE_MANIFEST,
        digest: manifestBlob.digest,
        size: manifestBlob.size,
        platform: { architecture: ociArch(), os: 'linux' },
        annotations,
      },
    ],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return { dir, tag: opts.tag, manifestDigest: manifestBlob.digest, configDigest: configBlob.digest, layers };
}

/** A tar of the layout, the form `ctr image import` reads. */
export async function ociLayoutToArchive(dir: string, outTar: string): Promise<void> {
  await execFileP('tar', ['-C', dir, '-cf', outTar, 'oci-layout', 'index.json', 'blobs']);
}

/** Deterministic pseudo-random bytes (xorshift), compressible only a little: exercises chunking. */
export function pseudoRandomBytes(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(Math.ceil(size / 4) * 4);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    // Keep one byte in four low so the data is mildly compressible, like real binaries.
    out.writeUInt32LE((x & 0xff3fffff) >>> 0, i);
  }
  return out.subarray(0, size);
}

export const HELLO_TEXT = 'hello from lazypull\n';

/** Layer 1: a static busybox and the applets the tests call. */
export async function busyboxLayer(): Promise<LayerEntry[]> {
  const busybox = await readFile('/bin/busybox');
  const applets = ['sh', 'echo', 'cat', 'sleep', 'ls', 'stat', 'sha256sum', 'true'];
  return [
    { type: 'dir', path: 'bin', mode: 0o755 },
    { type: 'file', path: 'bin/busybox', content: busybox, mode: 0o755 },
    ...applets.map((a): LayerEntry => ({ type: 'symlink', path: `bin/${a}`, target: 'busybox' })),
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'dir', path: 'etc', mode: 0o755 },
    { type: 'file', path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n' },
    { type: 'file', path: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
  ];
}

/** Layer 2: application files covering every entry kind the format has. */
export function appLayer(): LayerEntry[] {
  return [
    { type: 'dir', path: 'app', mode: 0o755, mtime: 1_600_000_000 },
    { type: 'file', path: 'app/hello.txt', content: HELLO_TEXT, mode: 0o644, mtime: 1_600_000_001 },
    { type: 'file', path: 'app/empty', content: '', mode: 0o600, uid: 1000, gid: 1000 },
    { type: 'file', path: 'app/setuid-tool', content: '#!/bin/sh\necho tool\n', mode: 0o4755 },
    { type: 'file', path: 'app/setgid-tool', content: '#!/bin/sh\necho tool\n', mode: 0o2755, gid: 50 },
    { type: 'dir', path: 'app/shared', mode: 0o1777 },
    {
      type: 'file',
      path: 'app/with-xattrs',
      content: 'xattr carrier\n',
      xattrs: { 'user.lazypull.test': 'yes', 'trusted.lazypull.bin': Buffer.from([0, 1, 2, 255]) },
    },
    // > 4 MiB: split into chunks by both converters at the default chunk size.
    { type: 'file', path: 'app/data/big.bin', content: pseudoRandomBytes(5 * 1024 * 1024 + 123), mode: 0o644 },
    { type: 'file', path: 'app/data/medium.txt', content: 'lazy '.repeat(200_000) },
    { type: 'hardlink', path: 'app/hello-link.txt', target: 'app/hello.txt' },
    { type: 'symlink', path: 'app/hello-sym', target: 'hello.txt', uid: 1000, gid: 1000 },
    { type: 'symlink', path: 'app/dangling', target: '/nonexistent/target' },
    { type: 'fifo', path: 'app/fifo', mode: 0o600 },
    { type: 'char', path: 'app/dev/null-copy', major: 1, minor: 3, mode: 0o666 },
    { type: 'block', path: 'app/dev/loop-copy', major: 7, minor: 0, mode: 0o660, gid: 6 },
    { type: 'file', path: 'app/utf8-ñame ü.txt', content: 'unicode name\n' },
    { type: 'file', path: `app/${'long-name-'.repeat(12)}end.txt`, content: 'long name\n' },
  ];
}

/** Layer 3: deletes a lower file, the way `docker build` records an `rm`. */
export function whiteoutLayer(): LayerEntry[] {
  return [
    { type: 'whiteout', path: 'etc/group' },
    { type: 'opaque', path: 'app/shared' },
    { type: 'file', path: 'app/shared/new.txt', content: 'after opaque\n' },
  ];
}

export const BUSYBOX_CMD = ['/bin/sh', '-c', 'cat /app/hello.txt'];

/** A runnable busybox image whose command prints HELLO_TEXT. */
export async function buildBusyboxImage(dir: string, tag = 'v1', imageName?: string): Promise<BuiltImage> {
  return buildOciLayout(dir, {
    layers: [{ entries: await busyboxLayer() }, { entries: appLayer() }, { entries: whiteoutLayer() }],
    config: { cmd: BUSYBOX_CMD },
    tag,
    imageName,
  });
}
