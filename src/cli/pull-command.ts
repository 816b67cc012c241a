/** `lazypull pull`: create an image in containerd with its layers prepared through the lazypull snapshotter. */
import { ContainerdConnection, DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE } from '../containerd/grpc-connection';
import { pullResolvedImage, resolveImage, type PulledLayer, type PullResult } from '../containerd/pull-image';
import { parsePlatform } from '../image/image-types';
import { MirroringRegistryClient } from '../registry/mirroring-client';
import { parseReference } from '../registry/reference';
import { createProgress, type Progress } from './progress';
import { trace } from '../util/trace';

export interface PullFlags {
  address?: string;
  namespace?: string;
  snapshotter?: string;
  plainHttp?: boolean;
  hostsDir?: string;
  platform?: string;
  json?: boolean;
}

export const DEFAULT_SNAPSHOTTER = 'lazypull';

function layerLine(l: PulledLayer): string {
  return `  ${l.mode.padEnd(8)} ${l.digest} (${l.size} bytes)\n`;
}

function summary(r: PullResult, seconds: number): string {
  const count = (mode: PulledLayer['mode']): number => r.layers.filter((l) => l.mode === mode).length;
  return (
    `${r.name}: ${r.target.digest} (${r.platform}), ${r.layers.length} layers: ` +
    `${count('lazy')} lazy, ${count('fetched')} fetched, ${count('existing')} existing; ` +
    `snapshotter ${r.snapshotter}, namespace ${r.namespace}, ${seconds.toFixed(2)} s\n`
  );
}

export async function pullCommand(reference: string, flags: PullFlags): Promise<void> {
  const started = process.hrtime.bigint();
  trace('pull.start');
  // Same environment variables as ctr, so the two are pointed at the same place.
  const address = flags.address ?? process.env.CONTAINERD_ADDRESS ?? DEFAULT_CONTAINERD_ADDRESS;
  const namespace = flags.namespace ?? process.env.CONTAINERD_NAMESPACE ?? DEFAULT_CONTAINERD_NAMESPACE;
  const platform = flags.platform ? parsePlatform(flags.platform) : undefined;
  // A malformed reference is reported before anything is contacted.
  parseReference(reference);
  // Nor is the registry contacted when containerd is obviously not there.
  await ContainerdConnection.checkSocket(address);
  const registry = new MirroringRegistryClient({ plainHttp: flags.plainHttp === true, ...(flags.hostsDir ? { hostsDir: flags.hostsDir } : {}) });
  // The registry answers while this process loads containerd's API and connects.
  const resolving = resolveImage(registry, parseReference(reference), platform);
  resolving.catch(() => undefined);
  let conn: ContainerdConnection | undefined;
  let progress: Progress | undefined;
  try {
    await new Promise((resolve) => setImmediate(resolve));
    conn = await ContainerdConnection.connect(address, { namespace });
    trace('pull.connected');
    const image = await resolving;
    trace('pull.resolved');
    const result = await pullResolvedImage(conn, registry, reference, image, {
      snapshotter: flags.snapshotter ?? DEFAULT_SNAPSHOTTER,
      ...(platform ? { platform } : {}),
      onLayerProgress: (layer, done) => {
        if (!progress) {
          progress = createProgress(`layer ${layer.index} ${layer.digest.slice(7, 19)}`, { json: flags.json });
          progress.setTotal(layer.size);
        }
        progress.update(done);
      },
      onLayer: (layer) => {
        progress?.stop();
        progress = undefined;
        if (!flags.json) process.stdout.write(layerLine(layer));
      },
    });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (flags.json) {
      process.stdout.write(
        `${JSON.stringify({
          image: result.name,
          digest: result.target.digest,
          mediaType: result.target.mediaType,
          manifest: result.manifestDigest,
          config: result.configDigest,
          platform: result.platform,
          snapshotter: result.snapshotter,
          namespace: result.namespace,
          chainId: result.chainId,
          created: result.created,
          layers: result.layers,
          seconds: Number(seconds.toFixed(3)),
        })}\n`,
      );
    } else {
      process.stdout.write(summary(result, seconds));
    }
  } finally {
    progress?.stop();
    conn?.close();
    await registry.close();
  }
}
