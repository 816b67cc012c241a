/**
 * Write a new single-platform image (layers, config, manifest) to any image
 * target: an OCI layout or a registry repository. For images built from
 * scratch, such as the demo's sample image or a benchmark's one-layer image;
 * conversion of existing images is src/convert's job.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { LazypullError } from '../errors';
import { sha256Digest } from '../format/toc';
import { OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST } from '../registry/media-types';
import type { ImageTarget } from './image-store';
import { hostPlatform, type Descriptor } from './image-types';

export interface LayerBlob {
  /** Of the compressed blob. */
  digest: string;
  size: number;
  /** Of the uncompressed tar: goes into the config's rootfs.diff_ids. */
  diffID: string;
  /** Default OCI tar+gzip. */
  mediaType?: string;
  /** The blob's bytes; may be called more than once (retries). */
  open(): Readable;
}

/** What the runtime starts, as in the image config's `config` object. */
export interface RunConfig {
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workingDir?: string;
}

export interface WrittenImage {
  manifest: Descriptor;
  config: Descriptor;
}

/** Fixed, so the same layers give the same image digest on every build. */
const CREATED = new Date(1_700_000_000 * 1000).toISOString();
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A layer held in memory. */
export function layerFromBuffers(gzip: Buffer, tar: Buffer): LayerBlob {
  return { digest: sha256Digest(gzip), size: gzip.length, diffID: sha256Digest(tar), open: () => Readable.from([gzip]) };
}

/** A tar.gz layer on disk: digest and diff ID in one streaming pass. */
export async function layerFromFile(gzPath: string): Promise<LayerBlob> {
  const compressed = createHash('sha256');
  const uncompressed = createHash('sha256');
  let size = 0;
  try {
    await pipeline(
      createReadStream(gzPath),
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          compressed.update(chunk);
          size += chunk.length;
          yield chunk;
        }
      },
      createGunzip(),
      async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) uncompressed.update(chunk);
      },
    );
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_GZIP_CORRUPT', `${gzPath}: not a readable tar.gz layer (${(err as Error).message})`, { layer: gzPath }, { cause: err });
  }
  return {
    digest: `sha256:${compressed.digest('hex')}`,
    size,
    diffID: `sha256:${uncompressed.digest('hex')}`,
    open: () => createReadStream(gzPath, { highWaterMark: 1 << 20 }),
  };
}

/** Writes blobs first, then the manifest, which the target tags (its tag, for an OCI layout). */
export async function writeImage(target: ImageTarget, layers: LayerBlob[], run: RunConfig): Promise<WrittenImage> {
  const platform = hostPlatform();
  const configBody = Buffer.from(
    JSON.stringify({
      created: CREATED,
      architecture: platform.architecture,
      os: platform.os,
      config: {
        Env: run.env ?? [DEFAULT_PATH],
        ...(run.entrypoint ? { Entrypoint: run.entrypoint } : {}),
        ...(run.cmd ? { Cmd: run.cmd } : {}),
        ...(run.workingDir ? { WorkingDir: run.workingDir } : {}),
      },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
      history: layers.map(() => ({ created: CREATED, created_by: 'lazypull' })),
    }),
  );
  const layerDescs: Descriptor[] = layers.map((l) => ({ mediaType: l.mediaType ?? OCI_LAYER_GZIP, digest: l.digest, size: l.size }));
  for (const [i, layer] of layers.entries()) {
    if (!(await target.hasBlob(layerDescs[i]))) await target.putBlob(layerDescs[i], () => layer.open());
  }
  const config: Descriptor = { mediaType: OCI_CONFIG, digest: sha256Digest(configBody), size: configBody.length };
  await target.putBlob(config, () => Readable.from([configBody]));
  const manifestBody = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: layerDescs }));
  const manifest: Descriptor = { mediaType: OCI_MANIFEST, digest: sha256Digest(manifestBody), size: manifestBody.length, platform };
  await target.putManifest(manifest, manifestBody, true);
  return { manifest, config };
}
