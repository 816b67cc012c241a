/** `lazypull snapshotter`: run the containerd proxy snapshotter in the foreground. */
import { startDaemon } from '../snapshotter/daemon';
import { resolveConfig, type DaemonFlags } from '../snapshotter/daemon-config';
import { toError } from '../errors';
import { jsonLogger } from '../util/json-log';

export async function snapshotterCommand(flags: DaemonFlags): Promise<void> {
  const config = resolveConfig(flags);
  const log = jsonLogger(config.logLevel);
  const daemon = await startDaemon(config, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log({ level: 'info', event: 'signal', signal });
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  try {
    await daemon.stop();
  } catch (err) {
    log({ level: 'error', event: 'stop_failed', error: toError(err).message });
    process.exitCode = 1;
  }
}
