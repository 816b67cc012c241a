/**
 * A private containerd: its own root, state, sockets and runc root in a temp
 * dir, and a unique default namespace, so the demo, benchmarks and tests
 * never touch a system containerd or each other. `stop()` undoes everything
 * (tasks, shims, mounts, runc state, cgroups, the dir) and is safe to call
 * twice or after a failed start; an exit hook does the same if this process
 * ends first.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { LazypullError } from '../errors';
import { containerdPaths, renderContainerdConfig, type ContainerdConfigOptions } from './containerd-config';
import { cleanupOnExit } from './exit-cleanup';
import { requireBinary } from './prerequisites';
import { sweepContainerdLeftovers } from './runtime-leftovers';

export type { CriOptions } from './containerd-config';

const execFileP = promisify(execFile);

export interface ContainerdOptions extends ContainerdConfigOptions {
  /** Seconds to wait for the socket to answer; default 20. */
  startTimeoutSec?: number;
  /** Where the private dir is created; default the system temp dir. */
  parentDir?: string;
  /** Leave the private dir (content, snapshots, log) in place on stop(). */
  keepDir?: boolean;
}

export interface CtrOptions {
  namespace?: string;
  /** Fail (reject) on a non-zero exit; default true. */
  check?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface CtrResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Containerd {
  /** grpc socket, for `ctr -a` and clients. */
  address: string;
  root: string;
  state: string;
  dir: string;
  /** Runc root to pass as `ctr run --runc-root` (isolated in `dir`). */
  runcRoot: string;
  /** Default namespace for `ctr` calls: unique per instance. */
  namespace: string;
  /** containerd's log (stdout+stderr). */
  logPath: string;
  /** Run `ctr` against this instance. */
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  stop(): Promise<void>;
}

/** `ctr` arguments for messages, with `--user NAME:SECRET` masked. */
function describeArgs(args: string[]): string {
  return args.map((a, i) => (i > 0 && (args[i - 1] === '--user' || args[i - 1] === '-u') ? '***' : a)).join(' ');
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-2000);
  } catch {
    return '';
  }
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  requireBinary('containerd', 'containerd');
  const ctrBinary = requireBinary('ctr', 'containerd');
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), 'lzp-ctrd-'));
  const paths = containerdPaths(dir);
  const namespace = `lzp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const keepDir = opts.keepDir === true;
  writeFileSync(paths.config, renderContainerdConfig(dir, opts));

  const logFd = openSync(paths.log, 'a');
  // Own process group: a Ctrl-C on the terminal reaches us, and we stop containerd in order.
  const child = spawn('containerd', ['--config', paths.config], { stdio: ['ignore', logFd, logFd], detached: true });
  closeSync(logFd);
  child.on('error', () => undefined); // shows up as an early exit or a failed probe below
  const unregister = cleanupOnExit(() => {
    if (!exited(child)) child.kill('SIGKILL');
    sweepContainerdLeftovers({ dir, address: paths.address, namespace, keepDir });
  });

  const ctr = async (args: string[], o: CtrOptions = {}): Promise<CtrResult> => {
    const full = ['-a', paths.address, '-n', o.namespace ?? namespace, ...args];
    try {
      const r = await execFileP(ctrBinary, full, { maxBuffer: 64 << 20, timeout: o.timeoutMs ?? 120_000, env: o.env ?? process.env });
      return { stdout: r.stdout, stderr: r.stderr, code: 0 };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; code?: number | string };
      const result = { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : -1 };
      if (o.check === false) return result;
      const command = `ctr ${describeArgs(args)}`;
      throw new LazypullError('LAZYPULL_ERR_SANDBOX', `${command} failed (${String(e.code)}): ${result.stderr.trim() || result.stdout.trim()}`, {
        command: `ctr ${args[0] ?? ''}`,
        exitCode: result.code,
      });
    }
  };

  /** Tasks first, while containerd still answers, so shims exit on their own; then containerd. */
  const shutDown = async (): Promise<void> => {
    if (exited(child)) return;
    const quick = { check: false, timeoutMs: 10_000 };
    const nss = await ctr(['namespaces', 'list', '-q'], quick);
    for (const ns of nss.stdout.split('\n').filter(Boolean)) {
      const tasks = await ctr(['tasks', 'list', '-q'], { ...quick, namespace: ns });
      for (const id of tasks.stdout.split('\n').filter(Boolean)) {
        await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { ...quick, namespace: ns });
        await ctr(['tasks', 'delete', '-f', id], { ...quick, namespace: ns });
      }
      const containers = await ctr(['containers', 'list', '-q'], { ...quick, namespace: ns });
      for (const id of containers.stdout.split('\n').filter(Boolean)) {
        await ctr(['containers', 'delete', id], { ...quick, namespace: ns });
      }
    }
    child.kill('SIGTERM');
    if (!(await waitForExit(child, 10_000))) {
      child.kill('SIGKILL');
      await waitForExit(child, 5_000);
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await shutDown();
      sweepContainerdLeftovers({ dir, address: paths.address, namespace, keepDir });
      unregister();
    })());

  const deadline = Date.now() + (opts.startTimeoutSec ?? 20) * 1000;
  for (;;) {
    if (exited(child)) {
      const log = logTail(paths.log);
      await stop();
      throw new LazypullError('LAZYPULL_ERR_SANDBOX', `containerd exited during start-up:\n${log}`, { binary: 'containerd' });
    }
    if ((await ctr(['version'], { check: false, timeoutMs: 5_000 })).code === 0) break;
    if (Date.now() > deadline) {
      const log = logTail(paths.log);
      await stop();
      throw new LazypullError('LAZYPULL_ERR_SANDBOX', `containerd did not answer on ${paths.address}:\n${log}`, { binary: 'containerd' });
    }
    await sleep(200);
  }
  return { address: paths.address, root: paths.root, state: paths.state, dir, runcRoot: paths.runcRoot, namespace, logPath: paths.log, ctr, stop };
}
