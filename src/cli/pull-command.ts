/**
 * `lazypull pull`: create an image in containerd with its layers prepared
 * through the lazypull snapshotter, in this process. The CLI's entry asks
 * the snapshotter daemon to do it first (daemon-pull-client.ts); this runs
 * when there is no daemon to ask, or with --no-daemon.
 */
import { ContainerdConnection, DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE } from '../containerd/grpc-connection';
import { DEFAULT_SNAPSHOTTER } from '../containerd/defaults';
import { pullResolvedImage, resolveImage } from '../containerd/pull-image';
import { parsePlatform } from '../image/image-types';
import { MirroringRegistryClient } from '../registry/mirroring-client';
import { parseReference } from '../registry/reference';
import { createProgress, type Progress } from './progress';
import { layerLine, pullJson, pullSummary } from './pull-output';
import { trace } from '../util/trace';

export interface PullFlags {
  address?: string;
  namespace?: string;
  snapshotter?: string;
  plainHttp?: boolean;
  hostsDir?: string;
  platform?: string;
  json?: boolean;
  /** Read by the daemon client (daemon-pull-client.ts) before this command runs; here the pull runs in this process. */
  snapshotterAddress?: string;
  daemon?: boolean;
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
    process.stdout.write(flags.json ? pullJson(result, seconds) : pullSummary(result, seconds));
  } finally {
    progress?.stop();
    conn?.close();
    await registry.close();
  }
}
