/**
 * Chunks on disk, content-addressed: DIR/sha256/ab/abcdef... (the first two
 * hex digits name a subdirectory, as in an OCI layout's blob store but
 * fanned out). Writes go to a temp file in the same directory and are
 * renamed into place, so a reader never sees a partial chunk. The index
 * (sizes, least-recently-used order) lives in memory and is rebuilt from
 * the directory on open, ordered by the files' access/modification times;
 * total size is kept under a limit by evicting the least recently used.
 *
 * Every read re-hashes the file: a chunk damaged on disk (bit rot, a crash
 * before the data reached the disk, someone editing the cache) is dropped
 * and reported as absent, never served.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { digestHex, type ChunkCache } from './chunk-cache';

const HEX64 = /^[0-9a-f]{64}$/;
const HEX2 = /^[0-9a-f]{2}$/;
/** File times are refreshed at most this often per entry, to carry LRU order across restarts cheaply. */
const TOUCH_INTERVAL_MS = 60_000;

interface Entry {
  size: number;
  /** When the file's times were last set (ms since the epoch). */
  touchedAt: number;
}

export interface DiskCacheUsage {
  bytes: number;
  entries: number;
}

export class DiskChunkCache implements ChunkCache {
  /** hex digest -> entry; Map order is LRU order (first = least recently used). */
  private readonly entries = new Map<string, Entry>();
  private readonly writes = new Map<string, Promise<void>>();
  private readonly madeDirs = new Set<string>();
  private bytes = 0;
  /** Entries found damaged on read and removed. */
  droppedCorrupt = 0;

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  static async open(dir: string, maxBytes: number): Promise<DiskChunkCache> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be a byte count, got ${maxBytes}`);
    const cache = new DiskChunkCache(dir, maxBytes);
    await fs.mkdir(join(dir, 'sha256'), { recursive: true });
    await cache.rebuild();
    await cache.evict();
    return cache;
  }

  private async rebuild(): Promise<void> {
    const root = join(this.dir, 'sha256');
    const found: Array<{ hex: string; size: number; time: number }> = [];
    for (const sub of await fs.readdir(root)) {
      if (!HEX2.test(sub)) continue;
      const subDir = join(root, sub);
      let names: string[];
      try {
        names = await fs.readdir(subDir);
      } catch {
        continue; // not a directory
      }
      this.madeDirs.add(subDir);
      for (const name of names) {
        const path = join(subDir, name);
        if (name.startsWith('.')) {
          // A temp file left by a crash mid-write.
          await fs.rm(path, { force: true });
          continue;
        }
        if (!HEX64.test(name) || !name.startsWith(sub)) continue;
        const st = await fs.stat(path).catch(() => undefined);
        if (st === undefined || !st.isFile()) continue;
        found.push({ hex: name, size: st.size, time: Math.max(st.atimeMs, st.mtimeMs) });
      }
    }
    found.sort((a, b) => a.time - b.time);
    for (const f of found) {
      this.entries.set(f.hex, { size: f.size, touchedAt: f.time });
      this.bytes += f.size;
    }
  }

  private pathOf(hex: string): string {
    return join(this.dir, 'sha256', hex.slice(0, 2), hex);
  }

  has(digest: string): boolean {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    return m !== null && this.entries.has(m[1]!);
  }

  usage(): DiskCacheUsage {
    return { bytes: this.bytes, entries: this.entries.size };
  }

  async get(digest: string): Promise<Buffer | undefined> {
    const hex = digestHex(digest);
    const entry = this.entries.get(hex);
    if (entry === undefined) return undefined;
    this.entries.delete(hex);
    this.entries.set(hex, entry);
    const path = this.pathOf(hex);
    let data: Buffer;
    try {
      data = await fs.readFile(path);
    } catch {
      // Removed behind our back (or evicted while we read): absent.
      this.forget(hex, entry);
      return undefined;
    }
    if (data.length !== entry.size || createHash('sha256').update(data).digest('hex') !== hex) {
      this.droppedCorrupt++;
      this.forget(hex, entry);
      await fs.rm(path, { force: true });
      return undefined;
    }
    const now = Date.now();
    if (now - entry.touchedAt > TOUCH_INTERVAL_MS) {
      entry.touchedAt = now;
      const t = now / 1000;
      fs.utimes(path, t, t).catch(() => undefined);
    }
    return data;
  }

  async put(digest: string, data: Buffer): Promise<void> {
    const hex = digestHex(digest);
    const existing = this.entries.get(hex);
    if (existing !== undefined) {
      this.entries.delete(hex);
      this.entries.set(hex, existing);
      return;
    }
    if (data.length > this.maxBytes) return;
    const running = this.writes.get(hex);
    if (running !== undefined) return running;
    const write = this.write(hex, data).finally(() => this.writes.delete(hex));
    this.writes.set(hex, write);
    return write;
  }

  private async write(hex: string, data: Buffer): Promise<void> {
    const subDir = join(this.dir, 'sha256', hex.slice(0, 2));
    if (!this.madeDirs.has(subDir)) {
      await fs.mkdir(subDir, { recursive: true });
      this.madeDirs.add(subDir);
    }
    const temp = join(subDir, `.${hex}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    // No fsync: a file torn by a crash fails its hash on read and is dropped.
    try {
      await fs.writeFile(temp, data, { flag: 'wx', mode: 0o600 });
      await fs.rename(temp, this.pathOf(hex));
    } catch (err) {
      await fs.rm(temp, { force: true });
      throw err;
    }
    const previous = this.entries.get(hex);
    if (previous !== undefined) this.forget(hex, previous);
    this.entries.set(hex, { size: data.length, touchedAt: Date.now() });
    this.bytes += data.length;
    await this.evict();
  }

  private forget(hex: string, entry: Entry): void {
    if (this.entries.get(hex) !== entry) return;
    this.entries.delete(hex);
    this.bytes -= entry.size;
  }

  private async evict(): Promise<void> {
    const victims: string[] = [];
    for (const [hex, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.forget(hex, entry);
      victims.push(hex);
    }
    await Promise.all(victims.map((hex) => fs.rm(this.pathOf(hex), { force: true })));
  }
}
