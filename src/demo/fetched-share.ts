/**
 * How much of an image a lazy run fetched: the `fetchedBytes` the layer
 * servers report in their status files (compressed bytes of file contents
 * fetched by Range GETs), plus every layer that was downloaded whole,
 * against the compressed size of all layers. Footers and TOCs (a few KiB
 * per layer, read once at mount) are not in `fetchedBytes`.
 */
import type { LayerMode } from '../containerd/pull-image';
import type { MountStatus } from '../fs/mount-status';

export interface PulledLayerFacts {
  digest: string;
  /** Compressed size. */
  size: number;
  /** How the layer got into containerd. */
  mode: LayerMode;
}

export interface FetchFacts {
  /** Compressed bytes fetched from the registry: file contents of lazy layers, whole fetched layers. */
  fetchedBytes: number;
  /** Compressed size of the image's layers. */
  imageBytes: number;
  /** fetchedBytes / imageBytes. */
  fetchedShare: number;
}

/** What the share is read from: the snapshotter's layer-server status files. */
export interface MountStatusSource {
  mountStatuses(): Promise<MountStatus[]>;
}

/** Layer servers rewrite their status every second: how long to wait for one written after the run. */
const FRESH_STATUS_TIMEOUT_MS = 5_000;

export function fetchFacts(layers: PulledLayerFacts[], statuses: MountStatus[]): FetchFacts {
  const imageBytes = layers.reduce((sum, l) => sum + l.size, 0);
  let fetchedBytes = 0;
  for (const layer of layers) {
    if (layer.mode === 'fetched') fetchedBytes += layer.size;
    else fetchedBytes += statuses.filter((s) => s.layer === layer.digest).reduce((sum, s) => sum + s.fetchedBytes, 0);
  }
  return { fetchedBytes, imageBytes, fetchedShare: imageBytes > 0 ? fetchedBytes / imageBytes : 0 };
}

/** The facts once every layer server of `layers` has written a status after `since` (ms since the epoch). */
export async function measureFetched(source: MountStatusSource, layers: PulledLayerFacts[], since: number): Promise<FetchFacts> {
  const digests = new Set(layers.filter((l) => l.mode !== 'fetched').map((l) => l.digest));
  const deadline = Date.now() + FRESH_STATUS_TIMEOUT_MS;
  let statuses = await source.mountStatuses();
  const stale = (): boolean => statuses.some((s) => digests.has(s.layer) && Date.parse(s.updatedAt) <= since);
  while (stale() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    statuses = await source.mountStatuses();
  }
  return fetchFacts(layers, statuses);
}
