/**
 * Whole-image conversion through the CLI: OCI layout to OCI layout,
 * multi-platform indexes, registry to registry (with Docker media types,
 * pushed by skopeo), re-conversion that keeps eStargz layers, and a
 * corrupt source blob.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { RegistryClient } from '../src/registry/client';
import { parseReference } from '../src/registry/reference';
import { runCli, runCliOk } from './support/cli';
import { appLayer, buildOciLayout, busyboxLayer, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST } from './support/oci-image';
import { startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireBinary, requireRoot } from './support/require-env';

const execFileP = promisify(execFile);
const TOC_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
const SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string };
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function blobFile(dir: string, digest: string): string {
  return join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T;
}

/** The TOC JSON inside an eStargz blob, read with system tar. */
async function storedToc(blob: Buffer): Promise<Buffer> {
  const tar = gunzipSync(blob);
  const dir = await mkdtemp(join(tmpdir(), 'lzp-toc-'));
  try {
    await writeFile(join(dir, 'layer.tar'), tar);
    const { stdout } = await execFileP('tar', ['-xOf', join(dir, 'layer.tar'), 'stargz.index.json'], { encoding: 'buffer', maxBuffer: 64 << 20 });
    return stdout;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Check a converted manifest's layers and config against the blobs themselves. */
function checkConvertedImage(manifest: { layers: Descriptor[] }, config: { rootfs: { diff_ids: string[] }; history?: unknown[] }, blobs: Map<string, Buffer>): Promise<void[]> {
  return Promise.all(
    manifest.layers.map(async (layer, i) => {
      const blob = blobs.get(layer.digest)!;
      assert.equal(sha256(blob), layer.digest);
      assert.equal(blob.length, layer.size);
      const tar = gunzipSync(blob);
      assert.equal(config.rootfs.diff_ids[i], sha256(tar), `layer ${i}: diff_id`);
      assert.equal(layer.annotations?.[SIZE_ANNOTATION], String(tar.length), `layer ${i}: uncompressed size`);
      assert.equal(layer.annotations?.[TOC_ANNOTATION], sha256(await storedToc(blob)), `layer ${i}: TOC digest`);
    }),
  );
}

describe('convert (whole images)', function () {
  let work: string;
  let source: string;

  before(async function () {
    requireRoot(this);
    requireBinary(this, 'tar');
    work = await mkdtemp(join(tmpdir(), 'lzp-convert-image-'));
    source = join(work, 'source');
    await buildOciLayout(source, {
      layers: [{ entries: await busyboxLayer() }, { entries: appLayer() }],
      config: { cmd: ['/bin/sh', '-c', 'cat /app/hello.txt'] },
      tag: 'v1',
    });
  });

  after(async function () {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('converts an OCI layout into another, with annotations, diff IDs and history', async function () {
    const target = join(work, 'target');
    const result = await runCliOk(['convert', `oci:${source}:v1`, `oci:${target}:esgz`, '--level', '1', '--json']);
    const summary = JSON.parse(result.stdout);
    const index = await readJson<{ manifests: Descriptor[] }>(join(target, 'index.json'));
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0].annotations?.['org.opencontainers.image.ref.name'], 'esgz');
    assert.equal(index.manifests[0].digest, summary.digest);
    const manifest = await readJson<{ mediaType: string; config: Descriptor; layers: Descriptor[] }>(blobFile(target, summary.digest));
    assert.equal(manifest.mediaType, MEDIA_TYPE_MANIFEST);
    const config = await readJson<{ rootfs: { diff_ids: string[] }; history: unknown[]; config: { Cmd: string[] } }>(blobFile(target, manifest.config.digest));
    const original = await readJson<{ history: unknown[] }>(blobFile(source, (await readJson<{ config: Descriptor }>(blobFile(source, (await readJson<{ manifests: Descriptor[] }>(join(source, 'index.json'))).manifests[0].digest))).config.digest));
    assert.deepEqual(config.history, original.history);
    assert.deepEqual(config.config.Cmd, ['/bin/sh', '-c', 'cat /app/hello.txt']);
    const blobs = new Map<string, Buffer>();
    for (const l of manifest.layers) blobs.set(l.digest, await readFile(blobFile(target, l.digest)));
    await checkConvertedImage(manifest, config, blobs);
    assert.equal(summary.manifests[0].layers.length, 2);
    assert.ok(summary.manifests[0].layers.every((l: { converted: boolean }) => l.converted));
  });

  describe('multi-platform index', function () {
    let multi: string;

    before(async function () {
      // Two platforms sharing the source layers, plus an attestation manifest that must be left out.
      multi = join(work, 'multi');
      await execFileP('cp', ['-a', source, multi]);
      const srcIndex = await readJson<{ manifests: Descriptor[] }>(join(multi, 'index.json'));
      const amd64 = srcIndex.manifests[0];
      const manifestBody = await readFile(blobFile(multi, amd64.digest));
      const manifest = JSON.parse(manifestBody.toString());
      const config = await readJson<Record<string, unknown>>(blobFile(multi, manifest.config.digest));
      const armConfig = Buffer.from(JSON.stringify({ ...config, architecture: 'arm64' }));
      await writeFile(blobFile(multi, sha256(armConfig)), armConfig);
      const armManifest = Buffer.from(JSON.stringify({ ...manifest, config: { ...manifest.config, digest: sha256(armConfig), size: armConfig.length } }));
      await writeFile(blobFile(multi, sha256(armManifest)), armManifest);
      const index = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPE_INDEX,
        manifests: [
          { mediaType: MEDIA_TYPE_MANIFEST, digest: amd64.digest, size: manifestBody.length, platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: MEDIA_TYPE_MANIFEST, digest: sha256(armManifest), size: armManifest.length, platform: { os: 'linux', architecture: 'arm64' } },
          {
            mediaType: MEDIA_TYPE_MANIFEST, digest: amd64.digest, size: manifestBody.length,
            platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
          },
        ],
      }));
      await writeFile(blobFile(multi, sha256(index)), index);
      await writeFile(join(multi, 'index.json'), JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: MEDIA_TYPE_INDEX, digest: sha256(index), size: index.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }],
      }));
    });

    it('converts every platform with --all-platforms and writes a new index', async function () {
      const target = join(work, 'multi-all');
      const summary = JSON.parse((await runCliOk(['convert', `oci:${multi}:multi`, `oci:${target}:all`, '--all-platforms', '--level', '1', '--json'])).stdout);
      assert.equal(summary.mediaType, MEDIA_TYPE_INDEX);
      const index = await readJson<{ manifests: Descriptor[] }>(blobFile(target, summary.digest));
      assert.deepEqual(index.manifests.map((m) => m.platform?.architecture), ['amd64', 'arm64']);
      for (const desc of index.manifests) {
        const manifest = await readJson<{ config: Descriptor; layers: Descriptor[] }>(blobFile(target, desc.digest));
        const config = await readJson<{ architecture: string; rootfs: { diff_ids: string[] } }>(blobFile(target, manifest.config.digest));
        assert.equal(config.architecture, desc.platform?.architecture);
        const blobs = new Map<string, Buffer>();
        for (const l of manifest.layers) blobs.set(l.digest, await readFile(blobFile(target, l.digest)));
        await checkConvertedImage(manifest, config, blobs);
      }
    });

    it('converts only the platform asked for', async function () {
      const target = join(work, 'multi-arm');
      const summary = JSON.parse((await runCliOk(['convert', `oci:${multi}:multi`, `oci:${target}:arm`, '--platform', 'linux/arm64', '--level', '1', '--json'])).stdout);
      const index = await readJson<{ manifests: Descriptor[] }>(blobFile(target, summary.digest));
      assert.deepEqual(index.manifests.map((m) => m.platform?.architecture), ['arm64']);
    });

    it('names the platforms the image has when the one asked for is missing', async function () {
      const result = await runCli(['convert', `oci:${multi}:multi`, `oci:${join(work, 'multi-none')}:x`, '--platform', 'linux/s390x']);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /no manifest for platform linux\/s390x \(image has: linux\/amd64, linux\/arm64\)/);
    });
  });

  describe('registry to registry', function () {
    let registry: RegistryFixture;
    let client: RegistryClient;

    before(async function () {
      requireBinary(this, 'skopeo');
      registry = await startRegistry();
      client = new RegistryClient({ plainHttp: true });
      // A Docker schema 2 image, as most registries hold them, pushed by skopeo.
      await execFileP('skopeo', ['copy', '--quiet', '--format', 'v2s2', '--dest-tls-verify=false', `oci:${source}:v1`, `docker://${registry.host}/plain/app:v1`]);
    });

    after(async function () {
      await client?.close();
      await registry?.stop();
    });

    async function fetchImage(ref: string): Promise<{ mediaType: string; manifest: { mediaType: string; config: Descriptor; layers: Descriptor[] }; config: { rootfs: { diff_ids: string[] } }; blobs: Map<string, Buffer> }> {
      const parsed = parseReference(ref);
      const fetched = await client.getManifest(parsed);
      const manifest = JSON.parse(fetched.body.toString());
      const read = async (digest: string): Promise<Buffer> => {
        const chunks: Buffer[] = [];
        for await (const c of await client.getBlob(parsed, digest)) chunks.push(c as Buffer);
        return Buffer.concat(chunks);
      };
      const config = JSON.parse((await read(manifest.config.digest)).toString());
      const blobs = new Map<string, Buffer>();
      for (const l of manifest.layers) blobs.set(l.digest, await read(l.digest));
      return { mediaType: fetched.mediaType, manifest, config, blobs };
    }

    it('converts a Docker image and keeps its media types', async function () {
      await runCliOk(['convert', `${registry.host}/plain/app:v1`, `${registry.host}/esgz/app:v1`, '--plain-http', '--level', '1']);
      const image = await fetchImage(`${registry.host}/esgz/app:v1`);
      assert.equal(image.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
      for (const l of image.manifest.layers) assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
      await checkConvertedImage(image.manifest, image.config, image.blobs);
    });

    it('keeps layers that already are eStargz, byte for byte', async function () {
      const summary = JSON.parse((await runCliOk(['convert', `${registry.host}/esgz/app:v1`, `${registry.host}/again/app:v1`, '--plain-http', '--json'])).stdout);
      const first = await fetchImage(`${registry.host}/esgz/app:v1`);
      const again = await fetchImage(`${registry.host}/again/app:v1`);
      assert.deepEqual(again.manifest.layers.map((l) => l.digest), first.manifest.layers.map((l) => l.digest));
      assert.deepEqual(again.config.rootfs.diff_ids, first.config.rootfs.diff_ids);
      assert.ok(summary.manifests[0].layers.every((l: { converted: boolean }) => !l.converted));
      assert.deepEqual(again.manifest.layers.map((l) => l.annotations?.[TOC_ANNOTATION]), first.manifest.layers.map((l) => l.annotations?.[TOC_ANNOTATION]));
    });

    it('names the reference and the status when the source does not exist', async function () {
      const result = await runCli(['convert', `${registry.host}/missing/app:v1`, `${registry.host}/x/app:v1`, '--plain-http']);
      assert.notEqual(result.code, 0);
      assert.ok(result.stderr.includes(`${registry.host}/missing/app:v1`), result.stderr);
      assert.match(result.stderr, /404/);
    });
  });

  it('refuses a source blob whose bytes do not match its digest, and writes no image', async function () {
    const broken = join(work, 'broken');
    await execFileP('cp', ['-a', source, broken]);
    const index = await readJson<{ manifests: Descriptor[] }>(join(broken, 'index.json'));
    const manifest = await readJson<{ layers: Descriptor[] }>(blobFile(broken, index.manifests[0].digest));
    const layerPath = blobFile(broken, manifest.layers[1].digest);
    const bytes = await readFile(layerPath);
    bytes[bytes.length - 20] ^= 0xff;
    await writeFile(layerPath, bytes);
    const target = join(work, 'broken-out');
    const result = await runCli(['convert', `oci:${broken}:v1`, `oci:${target}:v1`]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /digest/);
    assert.ok(result.stderr.includes(manifest.layers[1].digest), result.stderr);
    await assert.rejects(readFile(join(target, 'index.json')), 'no tag written for a failed conversion');
  });
});
