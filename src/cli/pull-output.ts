/**
 * What `lazypull pull` prints, in one place: the pull may run in the CLI
 * process or in the snapshotter daemon (src/cli/daemon-pull-client.ts),
 * and users' scripts read the same lines and JSON either way. Type
 * imports only, so the thin daemon client stays small.
 */
import type { PulledLayer, PullResult } from '../containerd/pull-image';

export function layerLine(l: PulledLayer): string {
  return `  ${l.mode.padEnd(8)} ${l.digest} (${l.size} bytes)\n`;
}

export function pullSummary(r: PullResult, seconds: number): string {
  const count = (mode: PulledLayer['mode']): number => r.layers.filter((l) => l.mode === mode).length;
  return (
    `${r.name}: ${r.target.digest} (${r.platform}), ${r.layers.length} layers: ` +
    `${count('lazy')} lazy, ${count('fetched')} fetched, ${count('existing')} existing; ` +
    `snapshotter ${r.snapshotter}, namespace ${r.namespace}, ${seconds.toFixed(2)} s\n`
  );
}

/** `--json`: one object per pull. */
export function pullJson(r: PullResult, seconds: number): string {
  return `${JSON.stringify({
    image: r.name,
    digest: r.target.digest,
    mediaType: r.target.mediaType,
    manifest: r.manifestDigest,
    config: r.configDigest,
    platform: r.platform,
    snapshotter: r.snapshotter,
    namespace: r.namespace,
    chainId: r.chainId,
    created: r.created,
    layers: r.layers,
    seconds: Number(seconds.toFixed(3)),
  })}\n`;
}
