/**
 * One fresh node for a rollout run: a CRI environment (containerd with its
 * CRI plugin, CNI bridge networking) on the shared loopback registry, the
 * lazypull snapshotter as the CRI snapshotter when asked for (an empty
 * cache), and `lazypull controller` (the CLI process) on its CRI socket.
 * `stop()` ends all of it, then fails if a process, mount or bridge of the
 * node is left.
 */
import { execFile } from 'node:child_process';
import { copyFile, cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { leftoverLayerServers, sweepLayerServers } from '../src/demo/layer-servers';
import { startCriEnvironment, type CriEnvironment } from '../src/sandbox/cri-environment';
import type { LocalRegistry } from '../src/sandbox/local-registry';
import { startLocalSnapshotter, type LocalSnapshotter } from '../src/sandbox/local-snapshotter';
import { mountsUnder, pidsMentioning } from '../src/sandbox/runtime-leftovers';
import { Api, killController, startControllerProcess, type ControllerProcess } from '../src/sandbox/local-controller';

const execFileP = promisify(execFile);
export const LAZY_SNAPSHOTTER = 'lazypull';

export interface RolloutNode {
  dir: string;
  env: CriEnvironment;
  /** The lazypull snapshotter daemon, when it is the CRI snapshotter. */
  snapshotter?: LocalSnapshotter;
  controller: ControllerProcess;
  /** The controller's HTTP API (what `lazypull rollout --server` talks to). */
  api: Api;
  /** Copy the controller's, containerd's and the snapshotter's logs to `dest` as `PREFIX-NAME.log`. */
  keepLogs(dest: string, prefix: string): Promise<void>;
  stop(): Promise<void>;
}

async function linkExists(name: string): Promise<boolean> {
  return execFileP('ip', ['link', 'show', 'dev', name]).then(
    () => true,
    () => false,
  );
}

/** What a stopped node left behind, in words; empty when nothing. */
async function leftovers(dir: string, parts: { env?: CriEnvironment; controller?: ControllerProcess }): Promise<string[]> {
  const found: string[] = [];
  const servers = await leftoverLayerServers(dir);
  if (servers.processes.length > 0) found.push(`layer servers ${servers.processes.join(', ')}`);
  const mounts = [...new Set([...servers.mounts, ...mountsUnder(dir)])];
  if (mounts.length > 0) found.push(`mounts ${mounts.join(', ')}`);
  const child = parts.controller?.child;
  if (child !== undefined && child.exitCode === null && child.signalCode === null) found.push(`controller ${child.pid}`);
  if (parts.env !== undefined) {
    const shims = pidsMentioning(parts.env.containerd.address);
    if (shims.length > 0) found.push(`containerd or shims ${shims.join(', ')}`);
    if (await linkExists(parts.env.network.bridge)) found.push(`bridge ${parts.env.network.bridge}`);
  }
  return found;
}

export async function startRolloutNode(parent: string, registry: LocalRegistry, lazy: boolean): Promise<RolloutNode> {
  const dir = await mkdtemp(join(parent, 'node-'));
  let env: CriEnvironment | undefined;
  let snapshotter: LocalSnapshotter | undefined;
  let controller: ControllerProcess | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      // The controller first, so it does not recreate what the environment removes.
      if (controller !== undefined) await killController(controller);
      await env?.stop();
      await snapshotter?.stop();
      await sweepLayerServers(dir);
      const left = await leftovers(dir, { env, controller });
      await rm(dir, { recursive: true, force: true });
      if (left.length > 0) throw new Error(`the node left behind: ${left.join('; ')}`);
    })());
  try {
    env = await startCriEnvironment({
      registry,
      parentDir: dir,
      ...(lazy
        ? {
            snapshotter: LAZY_SNAPSHOTTER,
            beforeContainerd: async (ctx) => {
              snapshotter = await startLocalSnapshotter({ dir, plainHttpRegistries: [ctx.registry.host], hostsDir: ctx.hostsDir });
              return { proxySnapshotters: { [LAZY_SNAPSHOTTER]: snapshotter.socket } };
            },
          }
        : {}),
    });
    controller = await startControllerProcess(env, join(dir, 'controller'));
    const logs: Record<string, string | undefined> = { controller: controller.logPath, containerd: env.containerd.logPath, snapshotter: snapshotter?.logPath };
    const keepLogs = async (dest: string, prefix: string): Promise<void> => {
      await mkdir(dest, { recursive: true });
      for (const [name, path] of Object.entries(logs)) if (path !== undefined) await copyFile(path, join(dest, `${prefix}-${name}.log`));
      // The layer servers' own logs (prefetch, background fetch), one file each.
      if (snapshotter !== undefined) await cp(join(snapshotter.root, 'logs'), join(dest, `${prefix}-layer-servers`), { recursive: true }).catch(() => undefined);
    };
    return { dir, env, snapshotter, controller, api: new Api(controller.url), keepLogs, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
