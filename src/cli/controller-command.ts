/**
 * `lazypull controller`: run the in-place upgrade controller in the
 * foreground: CloneSets applied over HTTP, pods run through the CRI socket,
 * state in an LMDB store under --state. SIGINT/SIGTERM stop it (pods keep
 * running; a new controller on the same state carries on).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CriClient } from '../cri/cri-client';
import { LazypullError, toError } from '../errors';
import { Controller } from '../controller/controller';
import { CriPodRuntime } from '../controller/cri-runtime';
import { startHttpApi } from '../controller/http-api';
import { StateStore } from '../controller/state-store';
import { isLogLevel, jsonLogger } from '../util/json-log';

export interface ControllerFlags {
  cri?: string;
  state?: string;
  listen?: string;
  cgroupParent?: string;
  namespace?: string;
  logLevel?: string;
}

export const DEFAULT_CONTROLLER_LISTEN = '127.0.0.1:8450';

export async function controllerCommand(flags: ControllerFlags): Promise<void> {
  if (!flags.cri) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', '--cri SOCK is required (e.g. /run/containerd/containerd.sock)');
  if (!flags.state) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', '--state DIR is required');
  const level = flags.logLevel ?? 'info';
  if (!isLogLevel(level)) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `--log-level must be debug, info, warn or error, got ${JSON.stringify(level)}`);
  const log = jsonLogger(level);
  mkdirSync(join(flags.state, 'store'), { recursive: true });
  mkdirSync(join(flags.state, 'pods'), { recursive: true });

  const cri = new CriClient(flags.cri);
  await cri.waitUntilReady(30_000);
  const store = StateStore.open(join(flags.state, 'store'));
  let controller: Controller | undefined;
  const runtime = new CriPodRuntime(cri, {
    logRoot: join(flags.state, 'pods'),
    cgroupParent: flags.cgroupParent,
    namespace: flags.namespace,
    onReadinessChange: () => controller?.readinessChanged(),
    onLateStopFailure: (containerId, err) => log({ level: 'warn', event: 'late_stop_failed', containerId, error: toError(err).message }),
  });
  controller = new Controller({ runtime, store, log });
  await controller.start();
  const api = await startHttpApi(controller, flags.listen ?? DEFAULT_CONTROLLER_LISTEN, log);
  log({ event: 'started', url: api.url, cri: cri.endpoint, state: flags.state, pid: process.pid });

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log({ event: 'signal', signal });
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  try {
    await api.close();
    await controller.stop();
    runtime.close();
    cri.close();
    await store.close();
  } catch (err) {
    log({ level: 'error', event: 'stop_failed', error: toError(err).message });
    process.exitCode = 1;
  }
}
