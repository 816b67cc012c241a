/**
 * Loads a mount's start-up files (startup-files.ts) into the kernel's
 * caches before a container asks for them: first a stat of each path, right
 * at mount (dentries and attributes, kept for the mount's entry/attr
 * timeouts; the TOC alone answers these), then, once the prefetch has
 * requested their data, a read of each regular file (its pages, kept across
 * opens by `kernel_cache`; each read waits for its file's chunks to arrive).
 * A container starting on the layer then finds them in the kernel, as on a
 * disk it has read before, instead of making a FUSE round trip to the layer
 * server for every lookup and every 128 KiB it maps: on a cold python3
 * start that is some 200 round trips, taken here while containerd is still
 * creating the container.
 *
 * This runs in the process that serves the mount, so it must not block the
 * event loop on the mount: it uses the async fs API (libuv's thread pool),
 * one lookup and one read at a time, which leaves the pool's other threads
 * to the work that answers them (disk cache, gunzip).
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { trace } from '../util/trace';

export interface KernelCacheWarmupOptions {
  /** Read no more file contents than this (larger start-up sets are read by their containers). Default 64 MiB. */
  maxBytes?: number;
  /** Look up and read no more paths than this. Default 4096. */
  maxPaths?: number;
  log?: (event: Record<string, unknown>) => void;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_PATHS = 4096;
const READ_SIZE = 1024 * 1024;

export class KernelCacheWarmup {
  private stopped = false;
  private running: Promise<void> = Promise.resolve();
  private wake: () => void = () => undefined;
  private readonly stopping = new Promise<void>((resolve) => (this.wake = resolve));

  private readonly paths: string[];

  constructor(
    private readonly mountpoint: string,
    paths: string[],
    private readonly opts: KernelCacheWarmupOptions = {},
  ) {
    this.paths = paths.slice(0, opts.maxPaths ?? DEFAULT_MAX_PATHS);
  }

  /** Look the paths up now; read the files once `dataRequested` resolves (it may never: then they are not read). */
  start(dataRequested: Promise<unknown>): void {
    this.running = this.warm(dataRequested);
  }

  /**
   * Stop after the current step and wait for it, so that nothing of ours
   * holds the mount open; but no longer than `timeoutMs` (a read may be
   * waiting for the network: the unmount then ends up detaching lazily).
   */
  async stop(timeoutMs = 1000): Promise<void> {
    this.stopped = true;
    this.wake();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  private async warm(dataRequested: Promise<unknown>): Promise<void> {
    if (this.paths.length === 0) return;
    const started = Date.now();
    // Lookups and reads go side by side (two pool threads at most): the reads wait for data, the lookups do not.
    const lookups = this.lookUp();
    const go = await Promise.race([dataRequested.then(() => true, () => false), this.stopping.then(() => false)]);
    const read = go && !this.stopped ? await this.readFiles() : undefined;
    await lookups;
    if (read === undefined) return;
    trace('server.kernel-cache-warmed');
    (this.opts.log ?? (() => undefined))({ event: 'kernel_cache_warmed', paths: this.paths.length, ...read, stopped: this.stopped, ms: Date.now() - started });
  }

  private async lookUp(): Promise<void> {
    for (const path of this.paths) {
      if (this.stopped) return;
      await fs.lstat(join(this.mountpoint, path)).catch(() => undefined);
    }
  }

  private async readFiles(): Promise<{ files: number; bytes: number; failures: number }> {
    let budget = this.opts.maxBytes ?? DEFAULT_MAX_BYTES;
    const totals = { files: 0, bytes: 0, failures: 0 };
    const buffer = Buffer.allocUnsafe(READ_SIZE);
    for (const path of this.paths) {
      if (this.stopped) break;
      const full = join(this.mountpoint, path);
      try {
        const st = await fs.lstat(full);
        if (!st.isFile() || st.size === 0 || st.size > budget || this.stopped) continue;
        budget -= st.size;
        const handle = await fs.open(full, 'r');
        try {
          while (!this.stopped) {
            const { bytesRead } = await handle.read(buffer, 0, READ_SIZE, null);
            if (bytesRead === 0) break;
            totals.bytes += bytesRead;
          }
        } finally {
          await handle.close();
        }
        totals.files++;
      } catch {
        // A file that cannot be read now is read by its container later, with the error it deserves.
        totals.failures++;
      }
    }
    return totals;
  }
}
