/**
 * Compatibility with the reference converter (`ctr-remote image convert
 * --estargz`, stargz-snapshotter): lazypull must read the reference's layers,
 * and its own layers must carry the same TOC (names, types, file and chunk
 * digests) for the same input and chunk size, and unpack to the same files.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import { Containerd, startContainerd } from './support/containerd-fixture';
import { BuiltImage, buildBusyboxImage, ociLayoutToArchive } from './support/oci-image';
import { requireBinary, requireFile, requireRoot } from './support/require-env';
import { compareTars, listTarNames } from './support/tar-compare';

const execFileP = promisify(execFile);
const CLI = join(__dirname, '..', 'src', 'cli', 'main.js');
const CHUNK_SIZE = 4 * 1024 * 1024; // the reference's default
const SRC_REF = 'docker.io/lazypull-test/compat:v1';
const DST_REF = 'docker.io/lazypull-test/compat:esgz';
const TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';
const UNCOMPRESSED_SIZE = 'io.containers.estargz.uncompressed-size';

interface TocEntry {
  name: string;
  type: string;
  size?: number;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  offset?: number;
  digest?: string;
  chunkOffset?: number;
  chunkSize?: number;
  chunkDigest?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, string>;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

interface RefLayer {
  source: BuiltImage['layers'][number];
  desc: Descriptor;
  path: string;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function lazypull(args: string[]): Promise<{ stdout: string; stderr: string }> {
  try {
    return await execFileP(process.execPath, [CLI, ...args], { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    throw new Error(`lazypull ${args.join(' ')} exited ${String(e.code)}: ${e.stderr ?? ''}`);
  }
}

/** The TOC bytes exactly as stored in the blob, read with system tools only. */
async function tocBytesOf(blob: string): Promise<Buffer> {
  const { stdout } = await execFileP('bash', ['-c', 'set -o pipefail; gzip -dc < "$1" | tar -xOf - stargz.index.json', 'bash', blob], {
    encoding: 'buffer',
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}

function parseToc(json: string | Buffer): TocEntry[] {
  const parsed = JSON.parse(json.toString()) as { version?: number; entries?: TocEntry[] };
  assert.equal(parsed.version, 1, 'TOC version');
  assert.ok(Array.isArray(parsed.entries), 'TOC has entries');
  return parsed.entries;
}

const isLandmark = (e: TocEntry): boolean => e.name === '.prefetch.landmark' || e.name === '.no.prefetch.landmark';
const dirless = (name: string): string => name.replace(/^\.\//, '').replace(/\/$/, '');

/** What must agree between converters: everything but blob offsets. Missing numbers are 0. */
function contentView(entries: TocEntry[]): string[] {
  return entries
    .filter((e) => !isLandmark(e))
    .map((e) =>
      JSON.stringify([
        dirless(e.name),
        e.type,
        e.size ?? 0,
        e.linkName ? dirless(e.linkName) : '',
        e.mode ?? 0,
        e.uid ?? 0,
        e.gid ?? 0,
        e.devMajor ?? 0,
        e.devMinor ?? 0,
        e.xattrs ?? {},
        e.digest ?? '',
        e.chunkOffset ?? 0,
        e.chunkDigest ?? '',
      ]),
    )
    .sort();
}

/** The footer's TOC offset (51-byte eStargz footer). */
function footerTocOffset(blob: Buffer): number {
  const footer = blob.subarray(blob.length - 51);
  assert.deepEqual([...footer.subarray(0, 4)], [0x1f, 0x8b, 0x08, 0x04], 'footer is a gzip header with FEXTRA');
  assert.equal(footer.readUInt16LE(10), 26, 'XLEN');
  assert.equal(footer.subarray(12, 14).toString('latin1'), 'SG', 'subfield id');
  assert.equal(footer.readUInt16LE(14), 22, 'subfield length');
  const payload = footer.subarray(16, 38).toString('latin1');
  assert.match(payload, /^[0-9a-f]{16}STARGZ$/);
  return parseInt(payload.slice(0, 16), 16);
}

describe('compatibility with ctr-remote (reference eStargz converter)', function () {
  this.timeout(180_000);
  let work = '';
  let containerd: Containerd | undefined;
  let source: BuiltImage;
  const refLayers: RefLayer[] = [];

  before(async function () {
    requireRoot(this);
    for (const bin of ['containerd', 'ctr', 'ctr-remote', 'tar', 'gzip', 'python3']) requireBinary(this, bin);
    work = await mkdtemp(join(tmpdir(), 'lzp-compat-'));
    source = await buildBusyboxImage(join(work, 'src'), 'v1', SRC_REF);
    await ociLayoutToArchive(source.dir, join(work, 'src.tar'));
    containerd = await startContainerd();
    await containerd.ctr(['image', 'import', '--no-unpack', '--base-name', 'docker.io/lazypull-test/compat', join(work, 'src.tar')]);
    const converted = await execFileP(
      'ctr-remote',
      ['-a', containerd.address, '-n', containerd.namespace, 'image', 'convert', '--estargz', '--oci', SRC_REF, DST_REF],
      { timeout: 120_000 },
    );
    const manifestDigest = converted.stdout.match(/sha256:[0-9a-f]{64}/)?.[0];
    assert.ok(manifestDigest, `ctr-remote printed no manifest digest: ${converted.stdout}`);
    const blobs = join(containerd.root, 'io.containerd.content.v1.content', 'blobs', 'sha256');
    const manifest = JSON.parse(await readFile(join(blobs, manifestDigest.slice(7)), 'utf8')) as { layers: Descriptor[] };
    assert.equal(manifest.layers.length, source.layers.length);
    manifest.layers.forEach((desc, i) => {
      refLayers.push({ source: source.layers[i], desc, path: join(blobs, desc.digest.slice(7)) });
    });
    // For a person studying the reference format: LAZYPULL_SAVE_REF=/tmp/ref-estargz-layer.tar.gz
    if (process.env.LAZYPULL_SAVE_REF) {
      await execFileP('cp', [refLayers[1].path, process.env.LAZYPULL_SAVE_REF]);
    }
  });

  after(async function () {
    await containerd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('the reference layers (facts lazypull relies on)', function () {
    it('carry the TOC digest and uncompressed size annotations, matching the blob', async function () {
      for (const l of refLayers) {
        const blob = await readFile(l.path);
        assert.equal(l.desc.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
        assert.equal(l.desc.annotations?.[TOC_DIGEST], sha256(await tocBytesOf(l.path)));
        assert.equal(Number(l.desc.annotations?.[UNCOMPRESSED_SIZE]), gunzipSync(blob).length);
        const tocOffset = footerTocOffset(blob);
        // The TOC member holds the TOC's tar header, its bytes and the end-of-archive blocks.
        const tail = gunzipSync(blob.subarray(tocOffset));
        assert.equal(tail.subarray(0, 17).toString(), 'stargz.index.json');
      }
    });

    it('unpack to the same files as the original layers', async function () {
      for (const l of refLayers) assert.deepEqual(await compareTars(l.source.blobPath, l.path), [], l.desc.digest);
    });
  });

  describe('lazypull toc on reference layers', function () {
    before(function () {
      requireFile(this, CLI, 'the lazypull CLI (run tsc)');
    });

    it('prints the TOC, whose entries match the layer files', async function () {
      for (const l of refLayers) {
        const { stdout } = await lazypull(['toc', l.path]);
        const printed = parseToc(stdout);
        const stored = parseToc(await tocBytesOf(l.path));
        assert.deepEqual(contentView(printed), contentView(stored));
        assert.deepEqual(
          printed.map((e) => [e.name, e.type, e.offset ?? 0, e.chunkOffset ?? 0]),
          stored.map((e) => [e.name, e.type, e.offset ?? 0, e.chunkOffset ?? 0]),
          'offsets as stored',
        );
        const tocNames = new Set(printed.filter((e) => e.type !== 'chunk' && !isLandmark(e)).map((e) => dirless(e.name)));
        const tarNames = new Set((await listTarNames(l.source.blobPath)).map(dirless));
        assert.deepEqual([...tocNames].sort(), [...tarNames].sort());
      }
    });
  });

  describe('lazypull convert-layer against the reference', function () {
    const outputs: string[] = [];
    before(async function () {
      requireFile(this, CLI, 'the lazypull CLI (run tsc)');
      for (const [i, l] of refLayers.entries()) {
        const out = join(work, `lazypull-${i}.tar.gz`);
        const { stdout } = await lazypull(['convert-layer', l.source.blobPath, out, '--chunk-size', String(CHUNK_SIZE), '--json']);
        const result = JSON.parse(stdout) as Record<string, unknown>;
        const blob = await readFile(out);
        assert.equal(result.digest, sha256(blob), 'digest');
        assert.equal(result.size, (await stat(out)).size, 'size');
        const tar = gunzipSync(blob);
        assert.equal(result.diffID, sha256(tar), 'diffID');
        assert.equal(result.uncompressedSize, tar.length, 'uncompressedSize');
        assert.equal(result.tocDigest, sha256(await tocBytesOf(out)), 'tocDigest');
        outputs.push(out);
      }
    });

    it('writes the same TOC names, types and digests as ctr-remote', async function () {
      for (const [i, l] of refLayers.entries()) {
        const ours = parseToc(await tocBytesOf(outputs[i]));
        const theirs = parseToc(await tocBytesOf(l.path));
        assert.deepEqual(contentView(ours), contentView(theirs), `layer ${i}`);
      }
    });

    it('chunks big files exactly like the reference', async function () {
      const ours = parseToc(await tocBytesOf(outputs[1])).filter((e) => dirless(e.name) === 'app/data/big.bin');
      const theirs = parseToc(await tocBytesOf(refLayers[1].path)).filter((e) => dirless(e.name) === 'app/data/big.bin');
      assert.ok(theirs.length >= 2, 'the fixture file is larger than one chunk');
      assert.deepEqual(
        ours.map((e) => [e.type, e.chunkOffset ?? 0, e.chunkDigest]),
        theirs.map((e) => [e.type, e.chunkOffset ?? 0, e.chunkDigest]),
      );
    });

    it('puts each chunk at the start of its own gzip member (offsets decompress to the chunk)', async function () {
      for (const out of outputs) {
        const entries = parseToc(await tocBytesOf(out));
        let checked = 0;
        for (const e of entries) {
          if (!e.offset || !e.chunkDigest) continue;
          // Decompressing from the offset (across members) must yield the chunk's bytes first.
          const { stdout } = await execFileP(
            'bash',
            ['-c', `tail -c +${e.offset + 1} "$1" | gzip -dc 2>/dev/null | head -c ${chunkLength(e, entries)}`, 'bash', out],
            { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 },
          );
          assert.equal(sha256(stdout), e.chunkDigest, `${e.name}@${e.chunkOffset ?? 0}`);
          checked++;
        }
        assert.ok(checked > 0);
      }
    });

    it('unpacks to the same files as the original layers and the reference', async function () {
      for (const [i, l] of refLayers.entries()) {
        assert.deepEqual(await compareTars(l.source.blobPath, outputs[i]), [], `original vs lazypull, layer ${i}`);
        assert.deepEqual(await compareTars(l.path, outputs[i]), [], `ctr-remote vs lazypull, layer ${i}`);
      }
    });

    it('lazypull toc reads its own layers', async function () {
      for (const out of outputs) {
        const { stdout } = await lazypull(['toc', out]);
        assert.deepEqual(contentView(parseToc(stdout)), contentView(parseToc(await tocBytesOf(out))));
      }
    });
  });
});

/** Bytes of a chunk: chunkSize, or the rest of the file for the last chunk. */
function chunkLength(e: TocEntry, entries: TocEntry[]): number {
  if (e.chunkSize) return e.chunkSize;
  const head = entries.find((x) => x.name === e.name && x.type === 'reg');
  return (head?.size ?? 0) - (e.chunkOffset ?? 0);
}
