/**
 * Chunks on disk, content-addressed: DIR/sha256/ab/abcdef... (the first two
 * hex digits name a subdirectory, as in an OCI layout's blob store but
 * fanned out). Writes go to a temp file in the same directory and are
 * renamed into place, so a reader never sees a partial chunk. The index
 * (sizes, least-recently-used order) lives in memory and is rebuilt from
 * the directory on open, ordered by the files' access/modification times;
 * total size is kept under a limit by evicting the least recently used.
 *
 * The rebuild runs in the background: a cache of thousands of chunks takes
 * a good part of a second to list, and a mount must not wait for it. Until
 * it is done, a chunk not indexed yet is looked up on disk directly, and
 * nothing is evicted. Several processes share one directory, so only temp
 * files old enough to be a crash's leftovers are removed.
 *
 * Every read re-hashes the file: a chunk damaged on disk (bit rot, a crash
 * before the data reached the disk, someone editing the cache) is dropped
 * and reported as absent, never served.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, readdirSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestHex, type ChunkCache } from './chunk-cache';

const HEX64 = /^[0-9a-f]{64}$/;
const HEX2 = /^[0-9a-f]{2}$/;
/** File times are refreshed at most this often per entry, to carry LRU order across restarts cheaply. */
const TOUCH_INTERVAL_MS = 60_000;
/** A temp file older than this is a leftover of a crash, not another process's write in progress. */
const STALE_TEMP_MS = 60 * 60_000;

interface Entry {
  size: number;
  /** When the file's times were last set (ms since the epoch). */
  touchedAt: number;
}

/** How long the rebuild's synchronous listing runs before it lets other work in. */
const REBUILD_SLICE_MS = 2;

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/** A directory's entry names; none when it cannot be listed. */
function listNames(dir: string): Set<string> {
  try {
    return new Set(readdirSync(dir));
  } catch {
    return new Set();
  }
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
  /** The files on disk are all indexed (and the size limit applied). */
  private indexed = false;
  /** The eviction running now, if any (see evict). */
  private evicting: Promise<void> = Promise.resolve();
  private indexing: Promise<void> = Promise.resolve();
  /** Fan-out directories listed by lookups while the rebuild runs: name sets. */
  private readonly listedDirs = new Map<string, Set<string>>();
  private fanOutDirs: Set<string> | undefined;

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
  ) {}

  /**
   * `indexAfterMs` puts off the listing of what is on disk (and so any
   * eviction) by that long: a layer server starts while a container starts,
   * and the listing can wait until then.
   */
  static async open(dir: string, maxBytes: number, opts: { indexAfterMs?: number } = {}): Promise<DiskChunkCache> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be a byte count, got ${maxBytes}`);
    const cache = new DiskChunkCache(dir, maxBytes);
    await fs.mkdir(join(dir, 'sha256'), { recursive: true });
    const listingDue = opts.indexAfterMs ? sleep(opts.indexAfterMs, undefined, { ref: false }) : Promise.resolve();
    cache.indexing = listingDue.then(() => cache.rebuild()).finally(() => {
      cache.indexed = true;
      cache.listedDirs.clear();
      cache.fanOutDirs = undefined;
    });
    // A listing that fails leaves lookups on disk working; ready() reports the failure.
    cache.indexing.then(() => cache.evict(), () => undefined).catch(() => undefined);
    return cache;
  }

  /** Resolves once the chunks already on disk are indexed and the size limit is applied. */
  async ready(): Promise<void> {
    await this.indexing;
    await this.evict();
  }

  /**
   * Before the rebuild got to it: whether a chunk file is on disk. Lookups
   * are synchronous, and a reader asks about every chunk of its layer at
   * start, so this lists the chunk's fan-out directory once and answers
   * from the listing, without a stat per chunk.
   */
  private listedOnDisk(hex: string): boolean {
    const subDir = join(this.dir, 'sha256', hex.slice(0, 2));
    let names = this.listedDirs.get(subDir);
    if (names === undefined) {
      // The fan-out directories that exist, listed once: a new cache has none, and a failing readdir is costly.
      this.fanOutDirs ??= listNames(join(this.dir, 'sha256'));
      names = this.fanOutDirs.has(hex.slice(0, 2)) ? listNames(subDir) : new Set<string>();
      this.listedDirs.set(subDir, names);
    }
    return names.has(hex);
  }

  /** Before the rebuild got to it: index a chunk file found on disk (to read it: its size is checked on read). */
  private adopt(hex: string): Entry | undefined {
    if (!this.listedOnDisk(hex)) return undefined;
    try {
      const st = statSync(this.pathOf(hex));
      if (!st.isFile()) return undefined;
      const entry: Entry = { size: st.size, touchedAt: Math.max(st.atimeMs, st.mtimeMs) };
      this.entries.set(hex, entry);
      this.bytes += st.size;
      return entry;
    } catch {
      return undefined;
    }
  }

  /**
   * List every chunk file with its size and times. Synchronous calls in
   * short slices, yielding between them: a promise per stat costs ~10x the
   * CPU of the stat itself (0.44 s for 8,000 chunks, against 0.05 s), and
   * this runs while the mount serves a starting container.
   */
  private async rebuild(): Promise<void> {
    const root = join(this.dir, 'sha256');
    const found: Array<{ hex: string; size: number; time: number }> = [];
    let sliceStart = 0;
    const yieldSometimes = async (): Promise<void> => {
      if (performance.now() - sliceStart < REBUILD_SLICE_MS) return;
      await new Promise((resolve) => setImmediate(resolve));
      sliceStart = performance.now();
    };
    // open() returns first.
    await yieldSometimes();
    for (const sub of readdirSync(root)) {
      if (!HEX2.test(sub)) continue;
      const subDir = join(root, sub);
      let names: string[];
      try {
        names = readdirSync(subDir);
      } catch {
        continue; // not a directory
      }
      this.madeDirs.add(subDir);
      for (const name of names) {
        await yieldSometimes();
        const path = join(subDir, name);
        if (name.startsWith('.')) {
          // A temp file left by a crash mid-write (a recent one is another process's write in progress).
          const st = statOrUndefined(path);
          if (st !== undefined && Date.now() - st.mtimeMs > STALE_TEMP_MS) await fs.rm(path, { force: true });
          continue;
        }
        if (!HEX64.test(name) || !name.startsWith(sub)) continue;
        const st = statOrUndefined(path);
        if (st === undefined || !st.isFile()) continue;
        found.push({ hex: name, size: st.size, time: Math.max(st.atimeMs, st.mtimeMs) });
      }
    }
    found.sort((a, b) => a.time - b.time);
    // Chunks written or looked up meanwhile are the most recently used: they go last.
    const meanwhile = [...this.entries];
    this.entries.clear();
    for (const f of found) this.entries.set(f.hex, { size: f.size, touchedAt: f.time });
    for (const [hex, entry] of meanwhile) {
      this.entries.delete(hex);
      this.entries.set(hex, entry);
    }
    this.bytes = 0;
    for (const entry of this.entries.values()) this.bytes += entry.size;
  }

  private pathOf(hex: string): string {
    return join(this.dir, 'sha256', hex.slice(0, 2), hex);
  }

  has(digest: string): boolean {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (m === null) return false;
    return this.entries.has(m[1]!) || (!this.indexed && this.listedOnDisk(m[1]!));
  }

  usage(): DiskCacheUsage {
    return { bytes: this.bytes, entries: this.entries.size };
  }

  async get(digest: string): Promise<Buffer | undefined> {
    const hex = digestHex(digest);
    const entry = this.entries.get(hex) ?? (this.indexed ? undefined : this.adopt(hex));
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

  /**
   * Evictions run one after another, so that one that finds nothing left to
   * do (ready() after the one open() started) still returns only once the
   * files the other chose are gone.
   */
  private evict(): Promise<void> {
    const run = this.evicting.then(() => this.evictNow());
    this.evicting = run.catch(() => undefined);
    return run;
  }

  private async evictNow(): Promise<void> {
    // Until every file is indexed, the total is not known.
    if (!this.indexed) return;
    const victims: string[] = [];
    for (const [hex, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.forget(hex, entry);
      victims.push(hex);
    }
    await Promise.all(victims.map((hex) => fs.rm(this.pathOf(hex), { force: true })));
  }
}
