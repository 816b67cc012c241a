/**
 * How much of a mounted layer is local, for `lazypull mount --status`: the
 * serving process rewrites a small JSON file (temp file + rename, so a
 * reader never sees half of one) every second, under
 * `<stateDir>/mounts/<name>.json`, named after the mount point; it removes
 * the file when it unmounts. A reader checks that the writer still lives.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { HistogramData } from '../util/latency-histogram';
import { LazypullError } from '../errors';

export const DEFAULT_STATE_DIR = '/run/lazypull';

export interface MountStatus {
  mountpoint: string;
  pid: number;
  reference: string;
  layer: string;
  tocDigest: string;
  verified: boolean;
  startedAt: string;
  updatedAt: string;
  prefetch: 'none' | 'running' | 'done' | 'failed';
  backgroundFetch: 'disabled' | 'waiting' | 'running' | 'done' | 'stopped' | 'failed';
  /** Bytes of file data in the layer (each hardlinked file once). */
  totalBytes: number;
  /** Of those, bytes in the local cache. */
  localBytes: number;
  /** Compressed bytes fetched from the registry by this mount. */
  fetchedBytes: number;
  /** Registry requests for file data. */
  requests: number;
  verifyFailures: number;
  percentLocal: number;
  reads: number;
  readErrors: number;
  blobSize: number;
  /** Chunks reads found in the cache / had to fetch (absent in status files of older servers). */
  cacheHits?: number;
  cacheMisses?: number;
  /** Latency of the layer's registry range reads. */
  fetchSeconds?: HistogramData;
}

export interface ReadStatus extends MountStatus {
  /** The serving process is alive. */
  alive: boolean;
}

/** A file name for a mount point: readable, unique, short enough for any file system. */
export function statusFileName(mountpoint: string): string {
  const mp = resolve(mountpoint);
  const hash = createHash('sha256').update(mp).digest('hex').slice(0, 16);
  const base = basename(mp).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'root';
  return `${base}-${hash}.json`;
}

export function statusPath(stateDir: string, mountpoint: string): string {
  return join(stateDir, 'mounts', statusFileName(mountpoint));
}

export function percent(part: number, total: number): number {
  if (total <= 0) return 100;
  return Math.floor((part / total) * 1000) / 10;
}

export class MountStatusWriter {
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly snapshot: () => MountStatus,
    private readonly intervalMs = 1000,
  ) {}

  async start(): Promise<void> {
    await fs.mkdir(join(this.path, '..'), { recursive: true, mode: 0o755 });
    await this.write();
    this.timer = setInterval(() => void this.write().catch(() => undefined), this.intervalMs);
  }

  /** One atomic rewrite; writes never overlap. */
  write(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const tmp = `${this.path}.tmp-${process.pid}-${randomBytes(3).toString('hex')}`;
      try {
        await fs.writeFile(tmp, `${JSON.stringify(this.snapshot(), null, 2)}\n`, { mode: 0o644 });
        await fs.rename(tmp, this.path);
      } catch (err) {
        await fs.rm(tmp, { force: true });
        throw err;
      }
    });
    return this.writing;
  }

  async stop(remove = true): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.writing.catch(() => undefined);
    if (remove) await fs.rm(this.path, { force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function readMountStatus(stateDir: string, mountpoint: string): Promise<ReadStatus> {
  const path = statusPath(stateDir, mountpoint);
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `no lazypull mount at ${resolve(mountpoint)} (no status in ${join(stateDir, 'mounts')})`, {
        mountpoint: resolve(mountpoint),
      });
    }
    throw err;
  }
  const status = JSON.parse(text) as MountStatus;
  return { ...status, alive: processAlive(status.pid) };
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

export function formatStatus(s: ReadStatus): string {
  const lines = [
    `${s.mountpoint}: ${s.alive ? 'mounted' : 'NOT RUNNING (stale status)'} by pid ${s.pid}`,
    `  layer     ${s.layer} of ${s.reference}${s.verified ? '' : ' (TOC not verified)'}`,
    `  local     ${s.localBytes} / ${s.totalBytes} bytes (${s.percentLocal}%, ${mib(s.localBytes)} of ${mib(s.totalBytes)})`,
    `  fetched   ${s.fetchedBytes} bytes of a ${s.blobSize}-byte blob in ${s.requests} requests`,
    `  prefetch  ${s.prefetch}; background fetch ${s.backgroundFetch}`,
    `  reads     ${s.reads} (${s.readErrors} failed); chunk verify failures ${s.verifyFailures}`,
  ];
  if (s.cacheHits !== undefined && s.cacheMisses !== undefined) lines.push(`  chunks    ${s.cacheHits} from the cache, ${s.cacheMisses} fetched`);
  if (s.fetchSeconds !== undefined && s.fetchSeconds.count > 0) {
    lines.push(`  latency   ${((s.fetchSeconds.sum / s.fetchSeconds.count) * 1000).toFixed(1)} ms mean over ${s.fetchSeconds.count} range reads`);
  }
  lines.push(`  updated   ${s.updatedAt}`);
  return `${lines.join('\n')}\n`;
}
