/**
 * `lazypull pull`: create an image in containerd with its layers prepared
 * through the lazypull snapshotter, in this process. The CLI's entry asks
 * the snapshotter daemon to do it first (daemon-pull-client.ts); this runs
 * when there is no daemon to ask, or with --no-daemon.
 */
import { ContainerdConnection, DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE } from '../containerd/grpc-connection';
import { DEFAULT_SNAPSHOTTER } from '../containerd/defaults';
import { pullReference } from '../containerd/pull-reference';
import { parsePlatform } from '../image/image-types';
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
  let conn: ContainerdConnection | undefined;
  let progress: Progress | undefined;
  try {
    const source = { reference, address, plainHttp: flags.plainHttp === true, ...(platform ? { platform } : {}), ...(flags.hostsDir ? { hostsDir: flags.hostsDir } : {}) };
    const connect = async (at: string): Promise<ContainerdConnection> => {
      // Let the registry request go out before loading containerd's API blocks this process.
      await new Promise((resolve) => setImmediate(resolve));
      conn = await ContainerdConnection.connect(at, { namespace });
      trace('pull.connected');
      return conn;
    };
    const result = await pullReference(source, connect, {
      snapshotter: flags.snapshotter ?? DEFAULT_SNAPSHOTTER,
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
  }
}
