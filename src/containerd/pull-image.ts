/**
 * Pull an image into containerd the way a remote snapshotter needs it:
 * index, manifest and config go into containerd's content store (with the
 * `gc.ref` labels that keep them and the snapshots alive), then each layer
 * is prepared through the snapshotter with remote-snapshot labels. A layer
 * the snapshotter mounts lazily answers ALREADY_EXISTS and is never
 * downloaded; any other layer is downloaded into the content store, unpacked
 * with containerd's differ and committed under its chain ID. Last, the
 * image record points at the manifest (or index), so `ctr run` finds it.
 *
 * Everything happens under a containerd lease, deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { LazypullError } from '../errors';
import { formatPlatform, hostPlatform, parseJson, platformMatches, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type Platform } from '../image/image-types';
import type { RegistryClient } from '../registry/client';
import { isImageIndex, isImageManifest } from '../registry/media-types';
import { DOCKER_HUB_REGISTRY, formatReference, parseReference, withDigest, type ImageReference } from '../registry/reference';
import { chainIds } from './chain-id';
import { isContainerdError } from './containerd-errors';
import { ContentStore } from './content-store';
import { DiffService } from './diff';
import type { ContainerdConnection } from './grpc-connection';
import { ImageService } from './images';
import { withLease } from './leases';
import { SnapshotsClient } from './snapshots-client';
import type { ContentDescriptor } from './types';
import { trace } from '../util/trace';

/** containerd's label naming the chain ID a prepared snapshot will be committed as. */
export const LABEL_SNAPSHOT_REF = 'containerd.io/snapshot.ref';
/** Labels the lazypull snapshotter reads to find the layer in a registry. */
export const LABEL_IMAGE_REF = 'containerd.io/snapshot/lazypull.image-ref';
export const LABEL_LAYER_DIGEST = 'containerd.io/snapshot/lazypull.layer-digest';
/** CRI's hint: digests of this layer and the ones after it (containerd caps it at 4 KiB of label). */
const LABEL_IMAGE_LAYERS = 'containerd.io/snapshot/cri.image-layers';
/** Layer annotations with this prefix are passed on to the snapshotter (containerd's unpacker does the same). */
export const SNAPSHOT_LABEL_PREFIX = 'containerd.io/snapshot/';
const LABEL_DISTRIBUTION_SOURCE = 'containerd.io/distribution.source.';
const LABEL_UNCOMPRESSED = 'containerd.io/uncompressed';
const MAX_CONFIG_BYTES = 16 << 20;

/** lazy: the snapshotter serves it remotely; fetched: downloaded and unpacked; existing: the snapshot was already there. */
export type LayerMode = 'lazy' | 'fetched' | 'existing';

export interface PulledLayer {
  index: number;
  digest: string;
  mediaType: string;
  size: number;
  diffId: string;
  chainId: string;
  mode: LayerMode;
}

export interface PullResult {
  /** The image record's name, as `ctr images ls` shows it. */
  name: string;
  /** What the image record points at: the index, or the manifest if there is no index. */
  target: ContentDescriptor;
  manifestDigest: string;
  configDigest: string;
  platform: string;
  snapshotter: string;
  namespace: string;
  /** Chain ID of the whole stack (the top snapshot's name). */
  chainId: string;
  layers: PulledLayer[];
  /** Whether the image record was new (false: an existing one now points at this target). */
  created: boolean;
}

export interface PullImageOptions {
  /** containerd snapshotter plugin name, e.g. "lazypull". */
  snapshotter: string;
  /** Default: this machine's platform. */
  platform?: Platform;
  /** Bytes of a layer being downloaded (fetched layers only). */
  onLayerProgress?: (layer: { index: number; digest: string; size: number }, done: number) => void;
  /** Each layer as soon as it is ready. */
  onLayer?: (layer: PulledLayer) => void;
  /**
   * The image's layers, bottom first, with the labels their Prepare will
   * carry: called once, before containerd is asked which of them it has,
   * so that a snapshotter in the same process can start on them early (it
   * skips those it has itself).
   */
  onLayersToPrepare?: (layers: Array<{ index: number; labels: Record<string, string> }>) => void;
}

/**
 * The name containerd clients give an image: Docker Hub names spelled out
 * (`docker.io/library/x`), a tag added when there is none, and only the
 * digest kept when both are given (containerd's ParseDockerRef).
 */
export function containerdImageName(ref: ImageReference): string {
  const registry = ref.registry === DOCKER_HUB_REGISTRY ? 'docker.io' : ref.registry;
  const base = `${registry}/${ref.repository}`;
  if (ref.digest !== undefined) return `${base}@${ref.digest}`;
  return `${base}:${ref.tag ?? 'latest'}`;
}

async function readAll(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    length += (chunk as Buffer).length;
    if (length > limit) throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${what} is larger than ${limit} bytes`);
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts);
}

/** What the registry says about an image: enough to pull it into containerd. */
export interface ResolvedImage {
  index?: { descriptor: ContentDescriptor; body: Buffer; parsed: ImageIndex };
  manifest: { descriptor: ContentDescriptor; body: Buffer; parsed: ImageManifest };
  config: { descriptor: ContentDescriptor; body: Buffer; parsed: ImageConfig };
  platform: Platform;
}

/** Manifest (through the index, for `platform`) and config from the registry. */
export async function resolveImage(registry: RegistryClient, ref: ImageReference, platform: Platform = hostPlatform()): Promise<ResolvedImage> {
  const top = await registry.getManifest(ref);
  let index: ResolvedImage['index'];
  let manifestFetched = top;
  let chosen = platform;
  if (isImageIndex(top.mediaType)) {
    const parsed = parseJson<ImageIndex>(top.body, `index ${top.digest}`);
    index = { descriptor: { mediaType: top.mediaType, digest: top.digest, size: top.body.length }, body: top.body, parsed };
    const pick = (parsed.manifests ?? []).find((m) => isImageManifest(m.mediaType) && platformMatches(platform, m.platform));
    if (!pick) {
      const available = (parsed.manifests ?? []).map((m) => formatPlatform(m.platform)).join(', ') || 'none';
      throw new LazypullError(
        'LAZYPULL_ERR_MANIFEST_UNSUPPORTED',
        `${formatReference(ref)} has no image for ${formatPlatform(platform)} (available: ${available})`,
        { reference: formatReference(ref), platform: formatPlatform(platform) },
      );
    }
    chosen = pick.platform ?? platform;
    manifestFetched = await registry.getManifest(withDigest(ref, pick.digest));
  }
  if (!isImageManifest(manifestFetched.mediaType)) {
    throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${formatReference(ref)}: ${manifestFetched.mediaType} is not an image manifest`, {
      reference: formatReference(ref),
      mediaType: manifestFetched.mediaType,
    });
  }
  const manifest = parseJson<ImageManifest>(manifestFetched.body, `manifest ${manifestFetched.digest}`);
  if (!manifest.config?.digest || !Array.isArray(manifest.layers)) {
    throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `manifest ${manifestFetched.digest} has no config or no layers list`, { digest: manifestFetched.digest });
  }
  const configBody = await readAll(await registry.getBlob(ref, manifest.config.digest, { size: manifest.config.size }), MAX_CONFIG_BYTES, `config ${manifest.config.digest}`);
  const config = parseJson<ImageConfig>(configBody, `config ${manifest.config.digest}`);
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new LazypullError(
      'LAZYPULL_ERR_MANIFEST_UNSUPPORTED',
      `config ${manifest.config.digest} lists ${diffIds.length} diff IDs for ${manifest.layers.length} layers`,
      { digest: manifest.config.digest },
    );
  }
  return {
    ...(index ? { index } : {}),
    manifest: { descriptor: { mediaType: manifestFetched.mediaType, digest: manifestFetched.digest, size: manifestFetched.body.length }, body: manifestFetched.body, parsed: manifest },
    config: { descriptor: { mediaType: manifest.config.mediaType, digest: manifest.config.digest, size: configBody.length }, body: configBody, parsed: config },
    platform: chosen,
  };
}

/** Labels for the snapshotter's Prepare of one layer. */
export function snapshotLabels(imageRef: string, layer: Descriptor, chainId: string, following: Descriptor[] = []): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(layer.annotations ?? {})) {
    if (key.startsWith(SNAPSHOT_LABEL_PREFIX)) labels[key] = value;
  }
  labels[LABEL_SNAPSHOT_REF] = chainId;
  labels[LABEL_IMAGE_REF] = imageRef;
  labels[LABEL_LAYER_DIGEST] = layer.digest;
  // As CRI does: this and the following layers, so the snapshotter can start mounting them early.
  labels[LABEL_IMAGE_LAYERS] = [layer, ...following].map((l) => l.digest).join(',');
  return labels;
}

/**
 * Pull `reference` into containerd through `opts.snapshotter`. The
 * connection's namespace is used; the registry client decides plain HTTP,
 * mirrors and credentials.
 */
export async function pullImage(conn: ContainerdConnection, registry: RegistryClient, reference: string, opts: PullImageOptions): Promise<PullResult> {
  const image = await resolveImage(registry, parseReference(reference), opts.platform);
  return pullResolvedImage(conn, registry, reference, image, opts);
}

/**
 * pullImage for an image already resolved, so that a caller can fetch the
 * manifest and config while it connects to containerd.
 */
export async function pullResolvedImage(
  conn: ContainerdConnection,
  registry: RegistryClient,
  reference: string,
  image: ResolvedImage,
  opts: PullImageOptions,
): Promise<PullResult> {
  const ref = parseReference(reference);
  const name = containerdImageName(ref);
  const layers = image.manifest.parsed.layers;
  const diffIds = image.config.parsed.rootfs?.diff_ids ?? [];
  const chain = chainIds(diffIds);
  const sourceLabel = { [`${LABEL_DISTRIBUTION_SOURCE}${ref.registry === DOCKER_HUB_REGISTRY ? 'docker.io' : ref.registry}`]: ref.repository };

  const labelsOf = (i: number): Record<string, string> => snapshotLabels(name, layers[i]!, chain[i]!, layers.slice(i + 1));
  // Before the round trips through containerd below (tens of ms on a busy node).
  opts.onLayersToPrepare?.(layers.map((_, index) => ({ index, labels: labelsOf(index) })));
  // Fails fast (before anything is written) when the snapshotter is unknown to containerd.
  const lookup = new SnapshotsClient(conn, opts.snapshotter);
  const topExists = chain.length > 0 && (await lookup.stat(chain[chain.length - 1]!)) !== undefined;
  // Below a missing top, any layer may be there already (a shared base): looked up all at once.
  const present = topExists ? chain.map(() => true) : await Promise.all(chain.map(async (id, i) => i < chain.length - 1 && (await lookup.stat(id)) !== undefined));

  return withLease(conn, async (leased) => {
    const content = new ContentStore(leased);
    const snapshots = new SnapshotsClient(leased, opts.snapshotter);
    const diff = new DiffService(leased);

    const store = async (desc: ContentDescriptor, body: Buffer, kind: string, labels: Record<string, string>): Promise<void> => {
      await content.write(desc, body, { ref: `lazypull-${kind}-${desc.digest}` });
      await content.setLabels(desc.digest, { ...labels, ...sourceLabel });
    };

    const manifestLabels: Record<string, string> = { 'containerd.io/gc.ref.content.config': image.config.descriptor.digest };
    layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
    // Metadata content and layer snapshots do not depend on each other (the lease keeps both):
    // containerd writes the one while the snapshotter mounts the other.
    const chainId = chain[chain.length - 1] ?? '';
    // The config's reference to the top snapshot (for containerd's GC) is set with the config: a reference
    // to a snapshot that does not exist yet is ignored, and the lease keeps everything until the pull is done.
    const configLabels: Record<string, string> = chainId ? { [`containerd.io/gc.ref.snapshot.${opts.snapshotter}`]: chainId } : {};
    const metadataStored = (async () => {
      await store(image.config.descriptor, image.config.body, 'config', configLabels);
      await store(image.manifest.descriptor, image.manifest.body, 'manifest', manifestLabels);
      if (image.index) {
        const indexLabels: Record<string, string> = {};
        image.index.parsed.manifests.forEach((m, i) => (indexLabels[`containerd.io/gc.ref.content.m.${i}`] = m.digest));
        await store(image.index.descriptor, image.index.body, 'index', indexLabels);
      }
    })();
    // Awaited after the layers; a failure there must not go unhandled meanwhile.
    metadataStored.catch(() => undefined);

    const pulled: PulledLayer[] = [];
    for (const [i, layer] of layers.entries()) {
      const base = { index: i, digest: layer.digest, mediaType: layer.mediaType, size: layer.size, diffId: diffIds[i]!, chainId: chain[i]! };
      let mode: LayerMode;
      if (present[i]) {
        mode = 'existing';
      } else {
        mode = await prepareLayer({
          snapshots,
          content,
          diff,
          registry,
          ref,
          layer,
          diffId: base.diffId,
          chainId: base.chainId,
          parent: i === 0 ? '' : chain[i - 1]!,
          labels: labelsOf(i),
          sourceLabel,
          onProgress: opts.onLayerProgress ? (done) => opts.onLayerProgress!({ index: i, digest: layer.digest, size: layer.size }, done) : undefined,
        });
      }
      const done = { ...base, mode };
      pulled.push(done);
      opts.onLayer?.(done);
    }

    await metadataStored;

    const target = image.index?.descriptor ?? image.manifest.descriptor;
    trace('pull.layers-done');
    const { created } = await new ImageService(leased).put({ name, target });
    return {
      name,
      target,
      manifestDigest: image.manifest.descriptor.digest,
      configDigest: image.config.descriptor.digest,
      platform: formatPlatform(image.platform),
      snapshotter: opts.snapshotter,
      namespace: conn.namespace,
      chainId,
      layers: pulled,
      created,
    };
  });
}

interface PrepareLayerArgs {
  snapshots: SnapshotsClient;
  content: ContentStore;
  diff: DiffService;
  registry: RegistryClient;
  ref: ImageReference;
  layer: Descriptor;
  diffId: string;
  chainId: string;
  parent: string;
  labels: Record<string, string>;
  sourceLabel: Record<string, string>;
  onProgress?: (done: number) => void;
}

/** Prepare through the snapshotter; unless it serves the layer remotely, download, unpack and commit it. */
async function prepareLayer(a: PrepareLayerArgs): Promise<LayerMode> {
  const key = `lazypull-pull/${randomBytes(6).toString('hex')}/${a.chainId}`;
  let mounts;
  try {
    mounts = await a.snapshots.prepare(key, a.parent, a.labels);
    trace('pull.prepare-returned');
  } catch (err) {
    if (isContainerdError(err, 'ALREADY_EXISTS')) return 'lazy';
    throw err;
  }
  try {
    const desc: ContentDescriptor = { mediaType: a.layer.mediaType, digest: a.layer.digest, size: a.layer.size };
    if (!(await a.content.info(desc.digest))) {
      const blob = await a.registry.getBlob(a.ref, desc.digest, { size: desc.size });
      try {
        await a.content.write(desc, blob, { ref: `lazypull-layer-${desc.digest}`, onProgress: a.onProgress });
      } finally {
        blob.destroy();
      }
    }
    await a.content.setLabels(desc.digest, { ...a.sourceLabel, [LABEL_UNCOMPRESSED]: a.diffId });
    const applied = await a.diff.apply(desc, mounts);
    if (applied.digest !== a.diffId) {
      throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `layer ${desc.digest} unpacks to ${applied.digest}, but the image config says ${a.diffId}`, {
        digest: desc.digest,
        expected: a.diffId,
        actual: applied.digest,
      });
    }
    try {
      await a.snapshots.commit(a.chainId, key);
    } catch (err) {
      // Someone else committed the same chain meanwhile: theirs is as good as ours.
      if (!isContainerdError(err, 'ALREADY_EXISTS')) throw err;
      await a.snapshots.remove(key).catch(() => undefined);
      return 'existing';
    }
    return 'fetched';
  } catch (err) {
    await a.snapshots.remove(key).catch(() => undefined);
    throw err;
  }
}
