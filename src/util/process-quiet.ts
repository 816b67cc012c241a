/**
 * Whether a starting container's processes have gone quiet: every thread of
 * its main process and of that process's descendants asleep (state S or I)
 * and no CPU time used between two looks. A server that has finished
 * starting waits in accept, epoll or pause: quiet. One still starting runs
 * (R) or waits for its files (D: a disk or FUSE read).
 *
 * Why: the readiness tracker times a new container's first probes by it
 * (readiness.ts). An exec probe sent while the app is still busy fails, and
 * on a busy node its exec takes CPU from that very start-up; one sent the
 * moment the app goes quiet finds it ready sooner than a fixed delay would.
 * Quiet is only a hint for when to probe: the probe decides.
 *
 * Linux /proc only. The caller identifies the process first
 * (watchableNamespaceInit), so a reused pid is never watched.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { hasExited, type WatchedProcess } from './namespace-init-exit';
import { readProcStat } from './proc-stat';

/** A look at a process tree: all asleep, and the CPU time its threads have used. */
export interface TreeActivity {
  asleep: boolean;
  cpuNs: number;
}

/** Looks at no more processes than this (a fork bomb is not worth reading through). */
const MAX_PROCESSES = 256;
/** Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on Linux). */
const TICK_NS = 10_000_000;

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined; // the thread or process ended meanwhile
  }
}

/** A thread's state and CPU time: schedstat's nanoseconds where the kernel has them, else stat's clock ticks. */
function threadActivity(dir: string): { state: string; cpuNs: number } | undefined {
  const stat = readProcStat(`${dir}/stat`);
  if (stat === undefined) return undefined;
  const schedRun = Number(readOrUndefined(`${dir}/schedstat`)?.split(' ')[0]);
  return { state: stat.state, cpuNs: Number.isFinite(schedRun) ? schedRun : stat.cpuTicks * TICK_NS };
}

/** One look at `root` and its descendants; undefined once `root` has exited. */
export function treeActivity(root: WatchedProcess): TreeActivity | undefined {
  if (hasExited(root)) return undefined;
  let asleep = true;
  let cpuNs = 0;
  const seen = new Set<number>();
  const visit = (pid: number): void => {
    if (seen.has(pid) || seen.size >= MAX_PROCESSES) return;
    seen.add(pid);
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      return; // exited meanwhile
    }
    for (const tid of tids) {
      const dir = `/proc/${pid}/task/${tid}`;
      const thread = threadActivity(dir);
      if (thread === undefined) continue;
      // S: waiting for an event; I: idle kernel wait; Z: exited, not yet reaped. Anything else is at work.
      if (thread.state !== 'S' && thread.state !== 'I' && thread.state !== 'Z') asleep = false;
      cpuNs += thread.cpuNs;
      for (const child of (readOrUndefined(`${dir}/children`) ?? '').trim().split(' ')) {
        if (child !== '') visit(Number(child));
      }
    }
  };
  visit(root.pid);
  return { asleep, cpuNs };
}

export type QuietOutcome = 'quiet' | 'busy' | 'gone';

/**
 * Resolves 'quiet' once two looks `pollMs` apart find the tree asleep with
 * no CPU time used in between, 'busy' if that has not happened within
 * `maxWaitMs`, 'gone' once the process has exited.
 */
export function whenQuiet(root: WatchedProcess, opts: { pollMs: number; maxWaitMs: number }): Promise<QuietOutcome> {
  const deadline = Date.now() + opts.maxWaitMs;
  return new Promise<QuietOutcome>((resolve) => {
    let previous = treeActivity(root);
    const look = (): void => {
      const now = treeActivity(root);
      if (now === undefined || previous === undefined) return resolve('gone');
      if (now.asleep && previous.asleep && now.cpuNs === previous.cpuNs) return resolve('quiet');
      if (Date.now() >= deadline) return resolve('busy');
      previous = now;
      setTimeout(look, opts.pollMs);
    };
    setTimeout(look, Math.min(opts.pollMs, Math.max(0, opts.maxWaitMs)));
  });
}
