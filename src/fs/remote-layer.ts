/**
 * Open one eStargz layer of an image in a registry for lazy reading:
 * resolve the image's manifest (an index picks the host platform), find the
 * layer's descriptor, fetch the footer and the TOC with two Range GETs,
 * check the TOC against the descriptor's `toc.digest` annotation and build
 * the inode tree. Nothing else of the blob is fetched.
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
}

export interface RemoteLayer {
  index: LayerIndex;
  blob: RemoteBlob;
  descriptor: Descriptor;
  tocDigest: string;
  /** Digest of the image manifest that lists the layer. */
  manifestDigest: string;
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
  const verify = opts.verifyTocDigest !== false;
  validateDigest(layerDigest);
  const refText = formatReference(ref);
  const label = opts.label ?? `${refText}@${layerDigest}`;

  let found: { descriptor: Descriptor; manifestDigest: string } | undefined;
  for await (const { digest, manifest } of candidateManifests(client, ref, opts.platform ?? hostPlatform())) {
    const descriptor = (manifest.layers ?? []).find((l) => l.digest === layerDigest);
    if (descriptor) {
      found = { descriptor, manifestDigest: digest };
      break;
    }
  }
  if (!found) {
    throw new LazypullError('LAZYPULL_ERR_REGISTRY_NOT_FOUND', `${refText} has no layer ${layerDigest}`, { reference: refText, layer: layerDigest });
  }
  const { descriptor, manifestDigest } = found;
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
  const { toc, tocDigest, tocOffset } = await readBlobToc(blob, label);

  const expected = descriptor.annotations?.[TOC_DIGEST_ANNOTATION];
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
  return { index, blob, descriptor, tocDigest, manifestDigest, verified: expected !== undefined };
}
