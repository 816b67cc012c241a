/**
 * Convert a whole image (single manifest or multi-platform index) to
 * eStargz: each layer is converted (or kept when it already is eStargz),
 * the config gets the new diff IDs, the manifest the new layer descriptors
 * with the eStargz annotations, and everything is written to the target,
 * blobs before the manifests that name them.
 */
import { createReadStream, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { isLazypullError, LazypullError } from '../errors';
import { readBlobToc } from '../format/toc-reader';
import { sha256Digest, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from '../format/toc';
import type { ImageSource, ImageTarget } from '../image/image-store';
import {
  formatPlatform, parseJson, platformMatches,
  type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type Platform,
} from '../image/image-types';
import {
  DOCKER_LAYER_GZIP, OCI_LAYER, OCI_LAYER_GZIP, isImageIndex, isImageManifest,
} from '../registry/media-types';
import { AtomicFile } from '../util/atomic-file';
import { FileBlob } from '../util/file-blob';
import { openLater } from '../util/open-later';
import { convertLayerFile, DEFAULT_LEVEL, validateChunkSize, validateLevel } from './convert-layer';
import { DEFAULT_CHUNK_SIZE } from './estargz-writer';
import { GzipPool } from './gzip-pool';

export interface ConvertImageOptions {
  level?: number;
  chunkSize?: number;
  prioritize?: string[];
  /** Platforms to convert from an index, or 'all'. */
  platforms: Platform[] | 'all';
  /** Where temporary layer files go (default: the system temp dir). */
  workDir?: string;
  /** Called with (bytes done, bytes total) of the layers being converted. */
  onProgress?: (done: number, total: number) => void;
}

export interface ConvertedLayer {
  sourceDigest: string;
  digest: string;
  size: number;
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
  /** false when the layer already was eStargz and was kept as it is. */
  converted: boolean;
}

export interface ConvertedManifest {
  digest: string;
  mediaType: string;
  platform?: string;
  config: string;
  layers: ConvertedLayer[];
}

export interface ConvertImageResult {
  source: string;
  target: string;
  digest: string;
  mediaType: string;
  size: number;
  manifests: ConvertedManifest[];
}

const GZIP_LAYER_TYPES = new Set([OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, OCI_LAYER]);

function descriptorFor(mediaType: string, body: Buffer): Descriptor {
  return { mediaType, digest: sha256Digest(body), size: body.length };
}

/** Manifests in an index that are attestations or signatures, not runnable images. */
function isAttestation(desc: Descriptor): boolean {
  return desc.annotations?.['vnd.docker.reference.type'] !== undefined || desc.platform?.os === 'unknown';
}

class ImageConversion {
  private readonly pool: GzipPool;
  private readonly chunkSize: number;
  private doneBytes = 0;
  private totalBytes = 0;
  /** Platforms of one image usually share layers: convert each source layer once. */
  private readonly layerResults = new Map<string, Promise<{ desc: Descriptor; summary?: ConvertedLayer }>>();

  constructor(
    private readonly source: ImageSource,
    private readonly target: ImageTarget,
    private readonly opts: ConvertImageOptions,
    private readonly workDir: string,
  ) {
    this.pool = new GzipPool(validateLevel(opts.level ?? DEFAULT_LEVEL));
    this.chunkSize = validateChunkSize(opts.chunkSize ?? DEFAULT_CHUNK_SIZE);
  }

  async run(): Promise<ConvertImageResult> {
    try {
      const root = await this.source.resolveRoot();
      const mediaType = root.mediaType || parseJson<{ mediaType?: string }>(root.body, this.source.label).mediaType || '';
      const rootDesc: Descriptor = { mediaType, digest: root.digest, size: root.body.length };
      if (isImageIndex(mediaType)) return await this.convertIndex(rootDesc, root.body);
      if (isImageManifest(mediaType)) {
        const converted = await this.convertManifest(rootDesc, root.body, true);
        return this.result(converted.desc, [converted.summary]);
      }
      throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${this.source.label}: unsupported manifest media type "${mediaType}"`);
    } finally {
      await this.pool.close();
    }
  }

  private result(desc: Descriptor, manifests: ConvertedManifest[]): ConvertImageResult {
    return { source: this.source.label, target: this.target.label, digest: desc.digest, mediaType: desc.mediaType, size: desc.size, manifests };
  }

  private async convertIndex(rootDesc: Descriptor, body: Buffer): Promise<ConvertImageResult> {
    const index = parseJson<ImageIndex>(body, `${this.source.label}: index`);
    const runnable = (index.manifests ?? []).filter((m) => isImageManifest(m.mediaType) && !isAttestation(m));
    const wanted = this.opts.platforms;
    const selected = wanted === 'all' ? runnable : runnable.filter((m) => wanted.some((p) => platformMatches(p, m.platform)));
    if (selected.length === 0) {
      const have = runnable.map((m) => formatPlatform(m.platform)).join(', ') || 'none';
      const asked = wanted === 'all' ? 'any' : wanted.map(formatPlatform).join(', ');
      throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${this.source.label}: no manifest for platform ${asked} (image has: ${have})`);
    }
    const summaries: ConvertedManifest[] = [];
    const newManifests: Descriptor[] = [];
    for (const child of selected) {
      const childBody = await this.source.readManifest(child);
      const converted = await this.convertManifest(child, childBody, false);
      summaries.push(converted.summary);
      newManifests.push({ ...child, mediaType: converted.desc.mediaType, digest: converted.desc.digest, size: converted.desc.size });
    }
    const newBody = Buffer.from(JSON.stringify({ ...index, manifests: newManifests }));
    const desc = descriptorFor(rootDesc.mediaType, newBody);
    await this.target.putManifest(desc, newBody, true);
    return this.result(desc, summaries);
  }

  private async convertManifest(desc: Descriptor, body: Buffer, root: boolean): Promise<{ desc: Descriptor; summary: ConvertedManifest }> {
    const where = `${this.source.label}@${desc.digest}`;
    const manifest = parseJson<ImageManifest>(body, `${where}: manifest`);
    if (!manifest.config || !Array.isArray(manifest.layers)) {
      throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${where}: manifest has no config or layers`);
    }
    const config = parseJson<ImageConfig>(await this.source.readBlob(manifest.config), `${where}: config`);
    const diffIds = [...(config.rootfs?.diff_ids ?? [])];
    if (diffIds.length !== manifest.layers.length) {
      throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${where}: config lists ${diffIds.length} diff IDs for ${manifest.layers.length} layers`);
    }
    this.totalBytes += manifest.layers.filter((l) => !this.layerResults.has(l.digest)).reduce((sum, l) => sum + (l.size ?? 0), 0);
    const layers: Descriptor[] = [];
    const summaries: ConvertedLayer[] = [];
    for (let i = 0; i < manifest.layers.length; i++) {
      const source = manifest.layers[i];
      let pending = this.layerResults.get(source.digest);
      if (!pending) {
        pending = this.convertLayer(source, diffIds[i], this.layerResults.size);
        this.layerResults.set(source.digest, pending);
      }
      const { desc: layerDesc, summary } = await pending;
      layers.push(layerDesc);
      if (summary) {
        summaries.push(summary);
        diffIds[i] = summary.diffID;
      }
    }
    const newConfigBody = Buffer.from(JSON.stringify({ ...config, rootfs: { ...(config.rootfs ?? { type: 'layers' }), diff_ids: diffIds } }));
    const configDesc: Descriptor = { ...manifest.config, digest: sha256Digest(newConfigBody), size: newConfigBody.length };
    if (!(await this.target.hasBlob(configDesc))) {
      await this.target.putBlob(configDesc, () => Readable.from([newConfigBody]));
    }
    const newBody = Buffer.from(JSON.stringify({ ...manifest, config: configDesc, layers }));
    const mediaType = manifest.mediaType ?? desc.mediaType;
    const newDesc = descriptorFor(mediaType, newBody);
    await this.target.putManifest(newDesc, newBody, root);
    return {
      desc: newDesc,
      summary: { digest: newDesc.digest, mediaType, platform: desc.platform ? formatPlatform(desc.platform) : undefined, config: configDesc.digest, layers: summaries },
    };
  }

  /** Returns the layer's new descriptor; summary is undefined for layers passed through untouched. */
  private async convertLayer(layer: Descriptor, diffId: string, index: number): Promise<{ desc: Descriptor; summary?: ConvertedLayer }> {
    if (!GZIP_LAYER_TYPES.has(layer.mediaType)) {
      // Foreign, non-distributable or zstd layers: nothing we can make lazy; keep them.
      if (!layer.urls?.length && !(await this.target.hasBlob(layer))) {
        await this.target.putBlob(layer, openLater(() => this.source.openBlob(layer)), this.source.location);
      }
      this.doneBytes += layer.size;
      return { desc: layer };
    }
    const label = `${this.source.label} layer ${index} (${layer.digest})`;
    const original = join(this.workDir, `layer-${index}-in`);
    await this.download(layer, original, label);
    const existing = await this.existingEstargz(original, label);
    if (existing) {
      const uncompressedSize = Number(layer.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION]) || (await uncompressedLength(original, label));
      const desc: Descriptor = {
        ...layer,
        annotations: { ...layer.annotations, [TOC_DIGEST_ANNOTATION]: existing, [UNCOMPRESSED_SIZE_ANNOTATION]: String(uncompressedSize) },
      };
      if (!(await this.target.hasBlob(layer))) {
        await this.target.putBlob(layer, () => createReadStream(original), this.source.location);
      }
      this.doneBytes += layer.size;
      this.opts.onProgress?.(this.doneBytes, this.totalBytes);
      await fs.rm(original, { force: true });
      return { desc, summary: { sourceDigest: layer.digest, digest: layer.digest, size: layer.size, diffID: diffId, tocDigest: existing, uncompressedSize, converted: false } };
    }
    const converted = join(this.workDir, `layer-${index}-out`);
    const before = this.doneBytes;
    const result = await convertLayerFile(original, converted, {
      chunkSize: this.chunkSize,
      prioritize: this.opts.prioritize,
      pool: this.pool,
      label,
      onProgress: (done) => this.opts.onProgress?.(before + done, this.totalBytes),
    });
    this.doneBytes = before + layer.size;
    await fs.rm(original, { force: true });
    const annotations = { ...layer.annotations, [TOC_DIGEST_ANNOTATION]: result.tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: String(result.uncompressedSize) };
    const mediaType = layer.mediaType === OCI_LAYER ? OCI_LAYER_GZIP : layer.mediaType;
    const desc: Descriptor = { ...layer, mediaType, digest: result.digest, size: result.size, annotations };
    if (!(await this.target.hasBlob(desc))) await this.target.putBlob(desc, () => createReadStream(converted));
    await fs.rm(converted, { force: true });
    return { desc, summary: { sourceDigest: layer.digest, ...result, converted: true } };
  }

  /** The TOC digest when the blob already is eStargz, else undefined. */
  private async existingEstargz(path: string, label: string): Promise<string | undefined> {
    const blob = await FileBlob.open(path);
    try {
      return (await readBlobToc(blob, label)).tocDigest;
    } catch (err) {
      if (isLazypullError(err, 'LAZYPULL_ERR_NOT_ESTARGZ')) return undefined;
      throw err;
    } finally {
      await blob.close();
    }
  }

  private async download(desc: Descriptor, path: string, label: string): Promise<void> {
    const out = await AtomicFile.create(path);
    try {
      for await (const chunk of await this.source.openBlob(desc)) await out.write(chunk as Buffer);
      const actual = out.digest();
      if (actual !== desc.digest) {
        throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `${label}: downloaded blob has digest ${actual}`, { layer: desc.digest });
      }
      await out.commit(path);
    } catch (err) {
      await out.abort();
      throw err;
    }
  }
}

/** Uncompressed size of a gzip file, for eStargz layers that lack the annotation. */
async function uncompressedLength(path: string, label: string): Promise<number> {
  let total = 0;
  try {
    for await (const chunk of createReadStream(path).pipe(createGunzip())) total += (chunk as Buffer).length;
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_GZIP_CORRUPT', `${label}: cannot decompress (${(err as Error).message})`, { layer: label });
  }
  return total;
}

export async function convertImage(source: ImageSource, target: ImageTarget, opts: ConvertImageOptions): Promise<ConvertImageResult> {
  const workDir = await fs.mkdtemp(join(opts.workDir ?? tmpdir(), 'lazypull-convert-'));
  try {
    return await new ImageConversion(source, target, opts, workDir).run();
  } finally {
    await fs.rm(workDir, { recursive: true, force: true });
  }
}

