/**
 * Watch a container's main process through /proc for the moment it dies.
 *
 * Why: containerd answers StopContainer only after it has handled the exit
 * (the task's delete, runc's delete, the shim's clean-up), 60-120 ms after the
 * process is gone on a busy node. A replacement container may start as soon
 * as nothing of the old one runs; it need not wait for that bookkeeping.
 *
 * "Nothing runs" is only certain for a process that is the init of its own
 * PID namespace (a CRI container's default): when such a process exits, the
 * kernel kills every other process of the namespace and waits for them
 * before the init turns into a zombie (zap_pid_ns_processes), and its open
 * files (sockets included) are closed before that. So the init being a
 * zombie, or gone, means the whole container is gone. A process that shares
 * its PID namespace, or one this process cannot see (another PID namespace),
 * is not watchable: callers wait for the runtime instead.
 *
 * Linux only; elsewhere nothing is watchable.
 */
import { readFileSync } from 'node:fs';
import { readProcStat, type ProcStat } from './proc-stat';

/** A process identified beyond its pid: the start time tells a reused pid apart. */
export interface WatchedProcess {
  pid: number;
  /** Field 22 of /proc/PID/stat: clock ticks after boot. */
  startTime: string;
}

function readStat(pid: number): ProcStat | undefined {
  return readProcStat(`/proc/${pid}/stat`);
}

/** Whether the process is pid 1 of the innermost PID namespace it is in ("NSpid:" ends in 1). */
function isNamespaceInit(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const line = status.split('\n').find((l) => l.startsWith('NSpid:'));
    const ids = line?.slice('NSpid:'.length).trim().split(/\s+/) ?? [];
    // A single id is the pid in our own namespace: it is not in a namespace of its own.
    return ids.length > 1 && ids[ids.length - 1] === '1';
  } catch {
    return false;
  }
}

/** Whether one of the process's cgroup paths contains `marker` (a container id appears in its cgroup path). */
function inCgroupNamed(pid: number, marker: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .some((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1).includes(marker));
  } catch {
    return false;
  }
}

/**
 * The process `pid` if it can be watched for the end of its container: it
 * runs now (not a zombie), it is the init of its own PID namespace, and one
 * of its cgroup paths contains `cgroupMarker` (so the pid is the container's
 * and not another process's in a PID namespace we do not share). Undefined
 * otherwise. Ask before the process is told to stop.
 */
export function watchableNamespaceInit(pid: number, cgroupMarker: string): WatchedProcess | undefined {
  if (process.platform !== 'linux' || !Number.isInteger(pid) || pid <= 0 || cgroupMarker === '') return undefined;
  const before = readStat(pid);
  if (before === undefined || before.state === 'Z' || before.state === 'X') return undefined;
  if (!isNamespaceInit(pid) || !inCgroupNamed(pid, cgroupMarker)) return undefined;
  // Read again: the pid must not have changed hands while we looked.
  const after = readStat(pid);
  if (after === undefined || after.startTime !== before.startTime) return undefined;
  return { pid, startTime: before.startTime };
}

/** Whether the watched process has exited: gone, a zombie, or its pid now belongs to another process. */
export function hasExited(p: WatchedProcess): boolean {
  const now = readStat(p.pid);
  return now === undefined || now.state === 'Z' || now.state === 'X' || now.startTime !== p.startTime;
}

/**
 * Resolves once the process has exited (checked every `intervalMs`), or
 * when `until` settles, whichever is first; never rejects. /proc has no
 * exit notification for a process that is not our child, so this polls:
 * a read of /proc/PID/stat costs a few microseconds.
 */
export function processExit(p: WatchedProcess, until: Promise<unknown>, intervalMs = 2): Promise<void> {
  return new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      resolve();
    };
    const check = (): void => {
      if (hasExited(p)) done();
      else timer = setTimeout(check, intervalMs);
    };
    until.then(done, done);
    check();
  });
}
