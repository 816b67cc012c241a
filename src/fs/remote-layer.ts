/**
 * Open one eStargz layer of an image in a registry for lazy reading:
 * resolve the image's manifest (an index picks the host platform), find the
 * layer's descriptor, fetch the blob's tail (footer and, usually, the whole
 * TOC) with one Range GET, check the TOC against the descriptor's
 * `toc.digest` annotation and build the inode tree. A caller that already
 * knows the TOC digest (the snapshotter, from containerd's labels) skips the
 * manifest: the suffix range also tells the blob's size. Nothing else of
 * the blob is fetched.
 */
import { LazypullError } from '../errors';
import { readBlobToc } from '../format/toc-reader';
import { TOC_DIGEST_ANNOTATION } from '../format/toc';
import {
  formatPlatform,
  hostPlatform,
  parseJson,
  platformMatches,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from '../image/image-types';
import type { RegistryClient } from '../registry/client';
import { isGzipLayer, isImageIndex, isImageManifest } from '../registry/media-types';
import { formatReference, validateDigest, withDigest, type ImageReference } from '../registry/reference';
import { RemoteBlob } from '../registry/remote-blob';
import { LayerIndex } from './layer-index';
import { trace } from '../util/trace';

export interface OpenRemoteLayerOptions {
  client: RegistryClient;
  /** The image (tag or digest) whose manifest lists the layer. */
  ref: ImageReference;
  layerDigest: string;
  /** Refuse a layer without the TOC digest annotation. Default true. A TOC that does not match a present annotation is always refused. */
  verifyTocDigest?: boolean;
  /** For errors and logs; default "REF@LAYER". */
  label?: string;
  /** Platform to prefer in an index; default this machine's. */
  platform?: Platform;
  /**
   * The layer's `toc.digest` annotation, when the caller has it from the
   * image's manifest already: the manifest is then not fetched and the TOC
   * must match this digest.
   */
  tocDigest?: string;
}

/**
 * Bytes read from the end of a blob in the first request: the footer and,
 * for a layer of up to about 10,000 files (some 50 compressed TOC bytes
 * each), the whole TOC, so that opening a layer takes one round trip.
 */
export const TOC_TAIL_BYTES = 512 * 1024;

export interface RemoteLayer {
  index: LayerIndex;
  blob: RemoteBlob;
  tocDigest: string;
  /** Digest of the image manifest that lists the layer (not fetched when the TOC digest was given). */
  manifestDigest?: string;
  /** Whether the TOC was checked against the annotation (false only for an unannotated layer with verifyTocDigest false). */
  verified: boolean;
}

/** Image manifests of `ref`: the platform's first when it is an index, then the others. */
async function* candidateManifests(
  client: RegistryClient,
  ref: ImageReference,
  platform: Platform,
): AsyncGenerator<{ digest: string; manifest: ImageManifest }> {
  const top = await client.getManifest(ref);
  if (isImageManifest(top.mediaType)) {
    yield { digest: top.digest, manifest: parseJson<ImageManifest>(top.body, `manifest of ${formatReference(ref)}`) };
    return;
  }
  if (!isImageIndex(top.mediaType)) {
    throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${formatReference(ref)}: unsupported manifest type ${top.mediaType}`, {
      reference: formatReference(ref),
      mediaType: top.mediaType,
    });
  }
  const index = parseJson<ImageIndex>(top.body, `index of ${formatReference(ref)}`);
  const entries = (index.manifests ?? []).filter((d) => isImageManifest(d.mediaType));
  const ordered = [...entries.filter((d) => platformMatches(platform, d.platform)), ...entries.filter((d) => !platformMatches(platform, d.platform))];
  for (const d of ordered) {
    const fetched = await client.getManifest(withDigest(ref, d.digest));
    yield { digest: fetched.digest, manifest: parseJson<ImageManifest>(fetched.body, `manifest ${d.digest} (${formatPlatform(d.platform)})`) };
  }
}

export async function openRemoteLayer(opts: OpenRemoteLayerOptions): Promise<RemoteLayer> {
  const { client, ref, layerDigest } = opts;
  validateDigest(layerDigest);
  const label = opts.label ?? `${formatReference(ref)}@${layerDigest}`;
  if (opts.tocDigest !== undefined) {
    validateDigest(opts.tocDigest);
    const { blob, tail } = await RemoteBlob.openTail(client, ref, layerDigest, TOC_TAIL_BYTES);
    trace('server.tail-fetched');
    return indexLayer(blob, tail, opts.tocDigest, true, label);
  }

  const { descriptor, manifestDigest } = await findLayerDescriptor(client, ref, layerDigest, opts.platform ?? hostPlatform());
  if (!isGzipLayer(descriptor.mediaType)) {
    throw new LazypullError(
      'LAZYPULL_ERR_NOT_ESTARGZ',
      `${label}: layer media type ${descriptor.mediaType} is not gzip, so it cannot be eStargz`,
      { layer: layerDigest, mediaType: descriptor.mediaType },
    );
  }
  if (!Number.isSafeInteger(descriptor.size) || descriptor.size <= 0) {
    throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${label}: layer descriptor has invalid size ${String(descriptor.size)}`, { layer: layerDigest });
  }
  const blob = new RemoteBlob(client, ref, layerDigest, descriptor.size);
  const tailLength = Math.min(descriptor.size, TOC_TAIL_BYTES);
  const tail = await blob.readAt(descriptor.size - tailLength, tailLength);
  return { ...(await indexLayer(blob, tail, descriptor.annotations?.[TOC_DIGEST_ANNOTATION], opts.verifyTocDigest !== false, label)), manifestDigest };
}

async function findLayerDescriptor(
  client: RegistryClient,
  ref: ImageReference,
  layerDigest: string,
  platform: Platform,
): Promise<{ descriptor: Descriptor; manifestDigest: string }> {
  for await (const { digest, manifest } of candidateManifests(client, ref, platform)) {
    const descriptor = (manifest.layers ?? []).find((l) => l.digest === layerDigest);
    if (descriptor) return { descriptor, manifestDigest: digest };
  }
  const refText = formatReference(ref);
  throw new LazypullError('LAZYPULL_ERR_REGISTRY_NOT_FOUND', `${refText} has no layer ${layerDigest}`, { reference: refText, layer: layerDigest });
}

/** Read the TOC (from the tail, or after it), check it against the expected digest, build the tree. */
async function indexLayer(blob: RemoteBlob, tail: Buffer, expected: string | undefined, verify: boolean, label: string): Promise<RemoteLayer> {
  const layerDigest = blob.digest;
  const { toc, tocDigest, tocOffset } = await readBlobToc(blob, label, undefined, tail);
  trace('server.toc-parsed');
  if (expected === undefined && verify) {
    throw new LazypullError(
      'LAZYPULL_ERR_DIGEST_MISMATCH',
      `${label}: the layer descriptor has no ${TOC_DIGEST_ANNOTATION} annotation, so its TOC (${tocDigest}) cannot be verified; refusing to mount it lazily (use --no-verify to override)`,
      { layer: layerDigest, actual: tocDigest },
    );
  }
  // A digest that is there but wrong is refused even without verification: the TOC or the manifest is not what it claims.
  if (expected !== undefined && expected !== tocDigest) {
    throw new LazypullError(
      'LAZYPULL_ERR_DIGEST_MISMATCH',
      `${label}: TOC digest ${tocDigest} does not match the ${TOC_DIGEST_ANNOTATION} annotation ${expected}; refusing to mount`,
      { layer: layerDigest, expected, actual: tocDigest },
    );
  }
  const index = new LayerIndex(toc, { tocOffset, label });
  return { index, blob, tocDigest, verified: expected !== undefined };
}
