/**
 * What containers leave on the host outside containerd's own dirs, and how
 * to sweep it: shim processes, container processes in their cgroups, mounts,
 * runc state and cgroup directories. All synchronous, so the same code serves
 * an orderly stop and the last-resort exit hook (where nothing async runs).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';

/** Block this thread for `ms`: the exit hook cannot await a timer. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Mount points at or below `prefix`, deepest first. */
export function mountsUnder(prefix: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    // mountinfo escapes spaces etc. as octal
    .map((p) => p?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p): p is string => p !== undefined && (p === prefix || p.startsWith(prefix + '/')));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Pids of processes with `needle` as one argument on their command line (our shims carry our socket path). */
export function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(needle)) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** runc puts `ctr run` containers in /<namespace>/<id>: under each v1 controller, or once on v2. */
function cgroupDirsFor(namespace: string): string[] {
  const dirs = [join(CGROUP_ROOT, namespace)];
  try {
    for (const controller of readdirSync(CGROUP_ROOT)) dirs.push(join(CGROUP_ROOT, controller, namespace));
  } catch {
    // no cgroup fs mounted
  }
  return dirs;
}

/** Every cgroup directory below `path`, children first. */
function cgroupTree(path: string): string[] {
  let entries;
  try {
    entries = readdirSync(path, { withFileTypes: true });
  } catch {
    return [];
  }
  return [...entries.filter((e) => e.isDirectory()).flatMap((e) => cgroupTree(join(path, e.name))), path];
}

function cgroupPids(path: string): number[] {
  try {
    return readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kill container processes still in the namespace's cgroups (their shim is gone), then remove the cgroups. */
export function sweepCgroups(namespace: string): void {
  const trees = cgroupDirsFor(namespace).map(cgroupTree);
  for (const tree of trees) for (const cg of tree) cgroupPids(cg).forEach(killQuietly);
  for (const tree of trees) {
    for (const cg of tree) {
      // A killed process leaves its cgroup a moment later; rmdir says EBUSY until then.
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          rmdirSync(cg);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EBUSY') break;
          sleepSync(25);
        }
      }
    }
  }
}

export interface SweepTarget {
  /** The instance's private dir: mounts below it go, and the dir itself unless kept. */
  dir: string;
  /** containerd's socket path, found on the command line of its shims. */
  address: string;
  namespace: string;
  keepDir: boolean;
}

/** Everything after containerd itself is gone: shims, containers, mounts, runc state, cgroups, the dir. */
export function sweepContainerdLeftovers(target: SweepTarget): void {
  pidsMentioning(target.address).forEach(killQuietly);
  sweepCgroups(target.namespace);
  for (const point of mountsUnder(target.dir)) {
    try {
      execFileSync('umount', ['-l', point], { stdio: 'ignore' });
    } catch {
      // not mounted any more
    }
  }
  // runc keeps per-namespace state here when `ctr run` was not given --runc-root.
  rmSync(join('/run/containerd/runc', target.namespace), { recursive: true, force: true });
  if (!target.keepDir) rmSync(target.dir, { recursive: true, force: true, maxRetries: 3 });
}
