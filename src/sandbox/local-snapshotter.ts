/**
 * A private `lazypull snapshotter` daemon under a temp dir, for the demo,
 * benchmarks and tests. The daemon leaves its per-layer `lazypull mount`
 * servers running when it exits (so a restart does not break containers);
 * `stop()` here ends those too and waits until no FUSE mount is left under
 * its root.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LazypullError } from '../errors';
import { listMounts } from '../fs/fuse-mount';
import type { MountStatus } from '../fs/mount-status';
import { cleanupOnExit } from './exit-cleanup';
import { isProcessAlive as alive } from '../util/process-alive';

const execFileP = promisify(execFile);

/** The CLI entry point (this file runs from dist/src/sandbox). */
const CLI_PATH = join(__dirname, '..', 'cli', 'main.js');

export interface LocalSnapshotterOptions {
  /** Directory to work in (root, socket, log); it must exist. */
  dir: string;
  plainHttpRegistries?: string[];
  hostsDir?: string;
  backgroundFetch?: boolean;
  metricsAddress?: string;
  startTimeoutMs?: number;
}

export interface LocalSnapshotter {
  socket: string;
  root: string;
  logPath: string;
  /** Status of every layer served lazily right now. */
  mountStatuses(): Promise<MountStatus[]>;
  /** Kill the daemon alone (the layer servers keep running), as a crash would. */
  kill(): Promise<void>;
  /** Start the daemon again on the same root and socket. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}


async function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export async function startLocalSnapshotter(opts: LocalSnapshotterOptions): Promise<LocalSnapshotter> {
  const root = join(opts.dir, 'snapshotter');
  const socket = join(opts.dir, 'lazypull.sock');
  const logPath = join(opts.dir, 'snapshotter.log');
  const stateDir = join(root, 'state');
  const args = [CLI_PATH, 'snapshotter', '--root', root, '--address', socket, '--log-level', 'debug'];
  for (const host of opts.plainHttpRegistries ?? []) args.push('--plain-http-registry', host);
  if (opts.hostsDir) args.push('--hosts-dir', opts.hostsDir);
  if (opts.backgroundFetch === false) args.push('--no-background-fetch');
  if (opts.metricsAddress) args.push('--metrics-address', opts.metricsAddress);

  let child: ChildProcess | undefined;
  const spawnDaemon = async (): Promise<void> => {
    const logFd = openSync(logPath, 'a');
    child = spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    for (;;) {
      const log = await fs.readFile(logPath, 'utf8').catch(() => '');
      const starts = log.split('\n').filter((l) => l.includes('"event":"started"')).length;
      if (starts > restarts) break;
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        throw new LazypullError('LAZYPULL_ERR_SANDBOX', `lazypull snapshotter did not start:\n${log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    restarts++;
  };
  let restarts = 0;

  const mountStatuses = async (): Promise<MountStatus[]> => {
    const dir = join(stateDir, 'mounts');
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    const out: MountStatus[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      try {
        out.push(JSON.parse(await fs.readFile(join(dir, name), 'utf8')) as MountStatus);
      } catch {
        // rewritten or removed just now
      }
    }
    return out;
  };

  /** End the layer servers under our root, then detach whatever FUSE mount is left. */
  const stopLayerServers = async (): Promise<void> => {
    for (const s of await mountStatuses()) if (alive(s.pid)) process.kill(s.pid, 'SIGTERM');
    const deadline = Date.now() + 15_000;
    const ours = async (): Promise<string[]> => (await listMounts()).map((m) => m.mountpoint).filter((m) => m.startsWith(`${root}/`));
    while ((await ours()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    for (const s of await mountStatuses()) if (alive(s.pid)) process.kill(s.pid, 'SIGKILL');
    for (const mp of await ours()) await execFileP('umount', ['-l', mp]).catch(() => undefined);
  };

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      unregister();
      if (child && child.exitCode === null) {
        child.kill('SIGTERM');
        await waitExit(child, 10_000);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      await stopLayerServers();
    })());
  const unregister = cleanupOnExit(() => {
    // Synchronous last resort at process exit: kill what is left.
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  try {
    await spawnDaemon();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    socket,
    root,
    logPath,
    mountStatuses,
    async kill() {
      if (child && child.exitCode === null) {
        child.kill('SIGKILL');
        await waitExit(child, 5_000);
      }
    },
    async restart() {
      if (child && child.exitCode === null && child.signalCode === null) throw new LazypullError('LAZYPULL_ERR_SANDBOX', 'the snapshotter is still running');
      await spawnDaemon();
    },
    stop,
  };
}
