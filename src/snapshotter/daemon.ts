/**
 * The snapshotter daemon: remote layers re-mounted (or adopted) first, then
 * the Snapshots service (and the pull service `lazypull pull` uses) on its
 * unix socket, optional metrics. Stopping the
 * daemon leaves the layer servers running, so containers keep their
 * filesystems across a restart.
 */
import { promises as fs } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { join } from 'node:path';
import type { Server as GrpcServer } from '@grpc/grpc-js';
import type { Logger } from '../util/json-log';
import type { DaemonConfig } from './daemon-config';
import { FuseProcessLayers } from './fuse-process-layers';
import { serveSnapshots } from './grpc-service';
import { DaemonMetrics } from './metrics';
import { PullService, pullServiceDefinition } from './pull-service';
import { Snapshotter } from './snapshotter';

export interface RunningDaemon {
  snapshotter: Snapshotter;
  metrics: DaemonMetrics;
  stop(): Promise<void>;
}

/** The CLI entry point the layer servers are started from. */
export const CLI_PATH = join(__dirname, '..', 'cli', 'main.js');

export async function startDaemon(config: DaemonConfig, log: Logger): Promise<RunningDaemon> {
  await fs.mkdir(config.root, { recursive: true, mode: 0o700 });
  const stateDir = join(config.root, 'state');
  const metrics = new DaemonMetrics(stateDir);
  const remote = new FuseProcessLayers({
    cliPath: CLI_PATH,
    stateDir,
    logDir: join(config.root, 'logs'),
    cacheDir: config.cacheDir,
    cacheSize: config.cacheSize,
    memoryCacheSize: config.memoryCacheSize,
    prefetch: config.prefetch,
    backgroundFetch: config.backgroundFetch,
    requireTocDigest: config.requireTocDigest,
    plainHttpRegistries: config.plainHttpRegistries,
    hostsDir: config.hostsDir,
    log,
  });
  const snapshotter = await Snapshotter.open({
    root: config.root,
    remote: {
      mount: async (labels, mountpoint, opts) => {
        const source = await remote.mount(labels, mountpoint, opts);
        metrics.remoteMounts.inc({ result: source ? (opts?.ahead ? 'mounted_ahead' : 'mounted') : 'fallback' });
        return source;
      },
      layerKey: (labels) => remote.layerKey(labels),
      upcoming: (labels) => remote.upcoming(labels),
      remount: (source, mountpoint) => remote.remount(source, mountpoint),
      unmount: (mountpoint) => remote.unmount(mountpoint),
    },
    log,
  });
  // Before the socket accepts anything: containers started earlier must find their layers.
  await snapshotter.restoreRemoteLayers();
  // `lazypull pull` asks the daemon to pull on the same socket (pull-protocol.ts).
  const pulls = new PullService({ log, mountAhead: (layers) => snapshotter.mountAhead(layers) });
  const grpcServer: GrpcServer = await serveSnapshots(snapshotter, config.address, log, (m, c, s) => metrics.observe(m, c, s), [
    { definition: pullServiceDefinition(), handlers: pulls.handlers() },
  ]);
  let metricsServer: HttpServer | undefined;
  if (config.metricsAddress) metricsServer = await metrics.listen(config.metricsAddress);
  log({ level: 'info', event: 'started', address: config.address, root: config.root, metrics: config.metricsAddress });
  return {
    snapshotter,
    metrics,
    async stop() {
      await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
      pulls.close();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer!.close(() => resolve()));
      await snapshotter.close();
      await fs.rm(config.address, { force: true });
      log({ level: 'info', event: 'stopped' });
    },
  };
}
