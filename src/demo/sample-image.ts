/**
 * The demo's sample image, built without network as an OCI layout:
 * layer 1 is a static busybox with a few applets and /etc/passwd, layer 2 an
 * "app" whose command prints /app/hello.txt and that also ships 24 MiB of
 * data files it never reads, the usual shape of a real image, and what
 * lazy pulling saves: a lazy run fetches a few percent of the image.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { LazypullError } from '../errors';
import { OciLayout } from '../image/oci-layout';
import { packTar, type TarEntrySpec } from '../image/pack-tar';
import { layerFromBuffers, writeImage, type LayerBlob } from '../image/write-image';

export const BUSYBOX_PATH = '/bin/busybox';
export const GREETING = 'Hello from lazypull: this line came from /app/hello.txt in an eStargz layer.\n';
export const SAMPLE_CMD = ['/bin/sh', '-c', 'cat /app/hello.txt'];
const APPLETS = ['sh', 'cat', 'echo', 'ls', 'sleep'];
const DATA_FILES = 24;
const DATA_FILE_BYTES = 1 << 20;
/** Fixed times and contents (packTar's): the same build gives the same digests. */
type SampleEntry = TarEntrySpec;

export interface SampleLayer {
  name: string;
  digest: string;
  size: number;
  diffID: string;
  /** Entries in the tar (directories, files, symlinks). */
  entries: number;
}

export interface SampleImage {
  /** OCI layout dir. */
  dir: string;
  tag: string;
  manifestDigest: string;
  layers: SampleLayer[];
}

function dir(name: string, mode = 0o755): SampleEntry {
  return { header: { name: `${name}/`, type: 'directory', mode } };
}

function file(name: string, content: Buffer | string, mode = 0o644): SampleEntry {
  return { header: { name, type: 'file', mode }, content };
}

function symlink(name: string, target: string): SampleEntry {
  return { header: { name, type: 'symlink', linkname: target, mode: 0o777 } };
}

/** Deterministic bytes that do not compress, like the media and model files real images carry. */
function pseudoRandom(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** True when the ELF file has no program interpreter, i.e. runs in an image without a libc. */
function isStaticElf(data: Buffer): boolean {
  if (data.length < 64 || data.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = data[4] === 2;
  const le = data[5] === 1;
  const u16 = (at: number): number => (le ? data.readUInt16LE(at) : data.readUInt16BE(at));
  const u32 = (at: number): number => (le ? data.readUInt32LE(at) : data.readUInt32BE(at));
  const phoff = is64 ? Number(le ? data.readBigUInt64LE(0x20) : data.readBigUInt64BE(0x20)) : u32(0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > data.length) return false;
    if (u32(at) === PT_INTERP) return false;
  }
  return true;
}

/** The static busybox from Debian's busybox-static, or a PREREQUISITE_MISSING error saying so. */
export async function readStaticBusybox(path = BUSYBOX_PATH): Promise<Buffer> {
  const missing = (why: string): LazypullError =>
    new LazypullError('LAZYPULL_ERR_PREREQUISITE_MISSING', `${path} ${why}: install the Debian package busybox-static (apt-get install busybox-static)`, {
      file: path,
      package: 'busybox-static',
    });
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch {
    throw missing('is missing');
  }
  if (!isStaticElf(data)) throw missing('is not a statically linked executable');
  return data;
}


function busyboxEntries(busybox: Buffer): SampleEntry[] {
  return [
    dir('bin'),
    file('bin/busybox', busybox, 0o755),
    ...APPLETS.map((applet) => symlink(`bin/${applet}`, 'busybox')),
    dir('etc'),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n'),
  ];
}

function appEntries(): SampleEntry[] {
  const data = Array.from({ length: DATA_FILES }, (_, i) => file(`app/data/asset-${i}.bin`, pseudoRandom(DATA_FILE_BYTES, `asset-${i}`)));
  return [dir('app'), file('app/hello.txt', GREETING), dir('app/data'), ...data];
}

/** Build the image into `dir` (an OCI layout), tagged `tag`. */
export async function buildSampleImage(layoutDir: string, tag: string): Promise<SampleImage> {
  const busybox = await readStaticBusybox();
  const specs = [
    { name: 'busybox', entries: busyboxEntries(busybox) },
    { name: 'app', entries: appEntries() },
  ];
  const layers: SampleLayer[] = [];
  const blobs: LayerBlob[] = [];
  for (const spec of specs) {
    const tar = await packTar(spec.entries);
    const blob = layerFromBuffers(gzipSync(tar, { level: 6 }), tar);
    blobs.push(blob);
    layers.push({ name: spec.name, digest: blob.digest, size: blob.size, diffID: blob.diffID, entries: spec.entries.length });
  }
  const written = await writeImage(new OciLayout(layoutDir, tag), blobs, { cmd: SAMPLE_CMD });
  return { dir: layoutDir, tag, manifestDigest: written.manifest.digest, layers };
}
