/**
 * The demo's guard around the lazypull snapshotter's layer servers: FUSE is
 * there before anything starts, and no `lazypull mount` process or FUSE
 * mount under the demo's dir outlives it. The orderly stop is the
 * snapshotter's own (src/sandbox/local-snapshotter); this finds and sweeps
 * whatever that missed, so the demo can say so instead of leaving it.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LazypullError } from '../errors';
import { listMounts } from '../fs/fuse-mount';
import { findBinary } from '../sandbox/prerequisites';

const execFileP = promisify(execFile);

/** The CLI the layer servers run (this file runs from dist/src/demo). */
const CLI_PATH = join(__dirname, '..', 'cli', 'main.js');

/** /dev/fuse and fusermount, or a PREREQUISITE_MISSING error naming the package. */
export function requireFuse(): void {
  if (!existsSync('/dev/fuse')) {
    throw new LazypullError('LAZYPULL_ERR_PREREQUISITE_MISSING', '/dev/fuse is missing: lazy layers are served over FUSE (load the fuse module, or give the container /dev/fuse)', {
      file: '/dev/fuse',
    });
  }
  if (findBinary('fusermount') === undefined && findBinary('fusermount3') === undefined) {
    throw new LazypullError('LAZYPULL_ERR_PREREQUISITE_MISSING', 'fusermount is not installed: install the Debian package fuse3 (apt-get install fuse3)', {
      binary: 'fusermount',
      package: 'fuse3',
    });
  }
}

/** Pids of `lazypull mount` processes serving a mount point under `dir`. */
export function layerServerPids(dir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (args.includes(CLI_PATH) && args.includes('mount') && args.some((a) => a.startsWith(`${dir}/`))) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** FUSE mount points under `dir`, deepest first. */
export async function fuseMountsUnder(dir: string): Promise<string[]> {
  return (await listMounts())
    .filter((m) => m.fstype.startsWith('fuse') && m.mountpoint.startsWith(`${dir}/`))
    .map((m) => m.mountpoint)
    .sort((a, b) => b.length - a.length);
}

/**
 * Layer servers and FUSE mounts under `dir` still there after `graceMs`: a
 * server that has unmounted takes a moment to exit (it flushes its cache).
 */
export async function leftoverLayerServers(dir: string, graceMs = 5_000): Promise<{ processes: number[]; mounts: string[] }> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const left = { processes: layerServerPids(dir), mounts: await fuseMountsUnder(dir) };
    if (left.processes.length + left.mounts.length === 0 || Date.now() >= deadline) return left;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Kill every layer server under `dir` and detach its FUSE mounts. */
export async function sweepLayerServers(dir: string): Promise<void> {
  for (const pid of layerServerPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const mountpoint of await fuseMountsUnder(dir)) await execFileP('umount', ['-l', mountpoint]).catch(() => undefined);
}
