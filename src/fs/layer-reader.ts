/**
 * Reads file data of one eStargz layer lazily: a read maps to the chunks it
 * touches; chunks already cached are served from the cache, missing ones
 * that lie next to each other in the blob are fetched with one range read,
 * each is decompressed, checked against its sha256 digest and cached.
 *
 * Guarantees the filesystem above relies on:
 * - a chunk whose bytes do not match its digest is never returned or
 *   cached: the read fails with LAZYPULL_ERR_DIGEST_MISMATCH (after one
 *   refetch, in case the corruption was in transit) and the event is logged;
 * - a read settles within `readTimeoutMs`, retries included, whatever the
 *   blob reader does (a stalled `readAt` is raced against a timer); other
 *   failures reject with LAZYPULL_ERR_READ_FAILED. Both mean EIO;
 * - concurrent reads of a chunk share one fetch, also across layer readers
 *   that share a cache (identical chunks in different layers).
 *
 * Also here: prefetch of the start-up files at mount, and the control of
 * the background fetch (background-fetcher.ts) that fills in the rest.
 */
import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { isLazypullError, LazypullError, toError } from '../errors';
import type { BlobReader } from '../format/toc-reader';
import type { ChunkCache } from '../cache/chunk-cache';
import { BackgroundFetcher, ForegroundGate } from './background-fetcher';
import { S_IFMT, S_IFREG, type Chunk, type Inode, type LayerIndex } from './layer-index';
import { runtimeFiles } from './startup-files';
import { LatencyHistogram, type HistogramData } from '../util/latency-histogram';
import { trace } from '../util/trace';

export interface LayerReaderOptions {
  /** Layer digest, for logs and errors. */
  label: string;
  cache: ChunkCache;
  /** Cap on one coalesced range request. Default 16 MiB. */
  maxRequestBytes?: number;
  /** A foreground read fails after this long in total, retries included. Default 30000. */
  readTimeoutMs?: number;
  /** Structured events (JSON-able). */
  log?: (event: Record<string, unknown>) => void;
  /** Largest compressed range of one background request. Default 4 MiB. */
  backgroundBatchBytes?: number;
  /** Background fetch waits this long after the last foreground read. Default 100. */
  backgroundQuietMs?: number;
  /** Background fetch begins this long after startBackgroundFetch(). Default 1000. */
  backgroundStartDelayMs?: number;
  /** First backoff of background retries. Default 500. */
  backgroundRetryDelayMs?: number;
}

export interface LayerStats {
  /** Bytes of file data in the layer (each hardlinked file once). */
  totalBytes: number;
  /**
   * Of those, bytes whose chunks are in the cache: the chunks this reader
   * cached, plus, once counted (by stats() from a second after the reader
   * was made), those that were there before.
   */
  localBytes: number;
  /** Compressed bytes received from the blob reader. */
  fetchedBytes: number;
  /** Range reads issued to the blob reader. */
  requests: number;
  /** Chunks that failed verification (digest mismatch or undecodable). */
  verifyFailures: number;
  /** Chunks a read found in the cache. */
  cacheHits: number;
  /** Chunks a read had to fetch (each once, however many reads waited for it). */
  cacheMisses: number;
  /** Time of each range read that returned, from request to last byte. */
  fetchSeconds: HistogramData;
}

const DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024;
const DEFAULT_READ_TIMEOUT_MS = 30_000;
const DEFAULT_BACKGROUND_BATCH_BYTES = 4 * 1024 * 1024;
const DEFAULT_BACKGROUND_QUIET_MS = 100;
/**
 * A layer is mounted for a container about to start: the background fetch
 * keeps off the CPU until its start-up is over. In a rollout the cached
 * chunk lookups of a 2,700-file layer alone took ~30 ms of the layer
 * server's event loop while the new containers started.
 */
const DEFAULT_BACKGROUND_START_DELAY_MS = 1000;
/** stats() re-checks the cache (which may evict, or be filled by other layers) at most this often. */
const STATS_REFRESH_MS = 1000;
const FIRST_RETRY_DELAY_MS = 50;
const MAX_RETRY_DELAY_MS = 2000;

/** Fetches in flight, per cache: layers sharing a cache share fetches of identical chunks. */
const inflightByCache = new WeakMap<ChunkCache, Map<string, Promise<Buffer>>>();

/** Errors made for a whole read (file, offset, length), as opposed to those of one request. */
const readErrors = new WeakSet<object>();

/** Where a chunk is, for logs and errors. */
interface ChunkContext {
  file?: string;
}

/** Errors worth another attempt within the read's time budget. */
function isRetryable(err: unknown): boolean {
  if (!isLazypullError(err)) return true;
  return !['LAZYPULL_ERR_DIGEST_MISMATCH', 'LAZYPULL_ERR_REGISTRY_AUTH', 'LAZYPULL_ERR_REGISTRY_NOT_FOUND', 'LAZYPULL_ERR_INVALID_ARGUMENT'].includes(
    err.code,
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `promise`, or `onTimeout()`'s error after `ms`. The promise is not
 * cancelled (a BlobReader cannot be); its late outcome is dropped.
 */
function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The first `size` bytes that gunzipping `compressed` yields. The range may
 * hold later gzip members (tar headers of the next entries); decompression
 * stops as soon as the chunk is complete.
 */
export function inflateChunk(compressed: Buffer, size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out = Buffer.allocUnsafe(size);
    let got = 0;
    let settled = false;
    const gunzip = createGunzip({ chunkSize: Math.min(Math.max(size, 16 * 1024), 1024 * 1024) });
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      gunzip.destroy();
      if (err) reject(err);
      else resolve(out);
    };
    gunzip.on('data', (piece: Buffer) => {
      if (settled) return;
      const n = Math.min(piece.length, size - got);
      piece.copy(out, got, 0, n);
      got += n;
      if (got === size) finish();
    });
    gunzip.on('error', (err: Error) => finish(err));
    gunzip.on('end', () => finish(got === size ? undefined : new Error(`gzip data ends after ${got} of ${size} bytes`)));
    if (size === 0) finish();
    else gunzip.end(compressed);
  });
}

export class LayerReader {
  private readonly cache: ChunkCache;
  private readonly label: string;
  private readonly maxRequestBytes: number;
  private readonly readTimeoutMs: number;
  /** One attempt (one request, its refetch on mismatch included) may take this long before a retry. */
  private readonly attemptTimeoutMs: number;
  private readonly log: (event: Record<string, unknown>) => void;
  private readonly inflight: Map<string, Promise<Buffer>>;
  /** digest -> bytes of file data it stands for in this layer (a chunk repeated in two files counts twice). */
  private readonly weights = new Map<string, number>();
  /** One chunk per digest, in blob order: what prefetch and background fetch walk. */
  private readonly blobOrder: Chunk[];
  private readonly local = new Set<string>();
  private localBytes = 0;
  private lastRefresh = 0;
  private fetchedBytes = 0;
  private requests = 0;
  private cacheHits = 0;
  private cacheMisses = 0;
  private readonly fetchSeconds = new LatencyHistogram();
  private verifyFailures = 0;
  private readonly gate = new ForegroundGate();
  private background: BackgroundFetcher | undefined;
  /**
   * Resolves once prefetch() has requested the start-up files (or found
   * them cached): a read of them from then on joins those requests instead
   * of making its own. Pending until then, forever without a prefetch.
   */
  readonly prefetching: Promise<void>;
  private markPrefetching: () => void = () => undefined;
  /** chunk blob offset -> file path, built on first need (logging a bad chunk found outside a read). */
  private pathsByOffset: Map<number, string> | undefined;

  constructor(
    readonly index: LayerIndex,
    private readonly blob: BlobReader,
    private readonly opts: LayerReaderOptions,
  ) {
    this.prefetching = new Promise((resolve) => (this.markPrefetching = resolve));
    this.cache = opts.cache;
    this.label = opts.label;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.readTimeoutMs = opts.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    if (!(this.maxRequestBytes > 0) || !(this.readTimeoutMs > 0)) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${this.label}: maxRequestBytes and readTimeoutMs must be positive`);
    }
    // A stalled attempt leaves time for two more within the read's budget.
    this.attemptTimeoutMs = Math.max(Math.min(1000, this.readTimeoutMs), Math.floor(this.readTimeoutMs / 3));
    this.log = opts.log ?? ((): void => undefined);
    let inflight = inflightByCache.get(this.cache);
    if (inflight === undefined) {
      inflight = new Map();
      inflightByCache.set(this.cache, inflight);
    }
    this.inflight = inflight;

    const all: Chunk[] = [];
    for (const inode of index.inodes.values()) {
      for (const chunk of inode.chunks) {
        all.push(chunk);
        this.weights.set(chunk.digest, (this.weights.get(chunk.digest) ?? 0) + chunk.size);
      }
    }
    all.sort((a, b) => a.blobOffset - b.blobOffset);
    const seen = new Set<string>();
    this.blobOrder = all.filter((c) => !seen.has(c.digest) && seen.add(c.digest) !== undefined);
    // Not counted yet: with a warm disk cache the count lists its folders and
    // looks up every chunk, tens of ms that a mount should not wait for.
    this.lastRefresh = Date.now();
  }

  /**
   * Bytes [offset, offset + length) of a regular file; shorter only at the
   * end of the file. `path` is used in logs and errors.
   */
  async read(inode: Inode, offset: number, length: number, path?: string): Promise<Buffer> {
    if ((inode.mode & S_IFMT) !== S_IFREG) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${this.label}: ${path ?? `inode ${inode.ino}`} is not a regular file`, {
        layer: this.label,
        file: path,
      });
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${this.label}: invalid read ${offset}+${length}`, { layer: this.label, file: path });
    }
    const end = Math.min(inode.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const chunks = touchedChunks(inode.chunks, offset, end);
    const ctx: ChunkContext = { file: path };
    const state: { done: boolean; lastError?: unknown } = { done: false };
    const started = Date.now();
    this.gate.enter();
    try {
      const parts = await withTimeout(this.loadWithRetry(chunks, started + this.readTimeoutMs, state, ctx), this.readTimeoutMs, () =>
        this.readFailed(path, offset, length, `timed out after ${this.readTimeoutMs} ms`, state.lastError),
      );
      const out = Buffer.allocUnsafe(end - offset);
      for (const [i, chunk] of chunks.entries()) {
        const from = Math.max(offset, chunk.fileOffset);
        const to = Math.min(end, chunk.fileOffset + chunk.size);
        parts[i]!.copy(out, from - offset, from - chunk.fileOffset, to - chunk.fileOffset);
      }
      return out;
    } catch (err) {
      const error =
        isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH') || readErrors.has(err as object)
          ? (err as LazypullError)
          : this.readFailed(path, offset, length, toError(err).message, err);
      this.log({
        event: 'read_failed',
        layer: this.label,
        file: path,
        offset,
        length,
        code: error.code,
        error: error.message,
        ms: Date.now() - started,
      });
      throw error;
    } finally {
      state.done = true;
      this.gate.leave();
    }
  }

  /**
   * Everything before `.prefetch.landmark` (the prioritized files) in one
   * range request, verified and cached. Only the span of chunks still
   * missing is requested. Alongside, the few files containerd reads to
   * create a container (startup-files.ts) when they lie outside that span:
   * otherwise each would be a registry round trip while the container is
   * being created. Nothing when all is cached. Resolves `prefetching`.
   */
  async prefetch(): Promise<void> {
    const end = this.index.prefetchEnd ?? 0;
    const missing = end > 0 ? this.blobOrder.filter((c) => c.blobEnd <= end && !this.isPresent(c.digest)) : [];
    const runtime = this.runtimeChunks().filter((c) => c.blobEnd > end && !this.isPresent(c.digest));
    const started = Date.now();
    const pending: Array<Promise<Buffer>> = [];
    let bytes = 0;
    if (missing.length > 0) {
      const from = missing[0]!.blobOffset;
      const to = missing[missing.length - 1]!.blobEnd;
      bytes += to - from;
      const timeoutMs = this.readTimeoutMs * Math.max(1, Math.ceil((to - from) / this.maxRequestBytes));
      const raw = this.readBlob(from, to - from, timeoutMs);
      for (const chunk of missing) {
        pending.push(
          this.track(
            chunk.digest,
            raw.then((data) => this.verifyAndStore(chunk, data.subarray(chunk.blobOffset - from, chunk.blobEnd - from), {}, timeoutMs)),
          ),
        );
      }
    }
    if (runtime.length > 0) {
      for (const c of runtime) bytes += c.blobEnd - c.blobOffset;
      pending.push(...this.fetchTracked(runtime, this.readTimeoutMs, {}).values());
    }
    this.markPrefetching();
    if (pending.length === 0) return;
    const results = await Promise.allSettled(pending);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) {
      const error = toError(failed[0]!.reason);
      this.log({ event: 'prefetch_failed', layer: this.label, bytes, failedChunks: failed.length, error: error.message });
      throw error;
    }
    this.log({ event: 'prefetch_done', layer: this.label, bytes, chunks: pending.length, ms: Date.now() - started });
    trace('server.prefetched');
  }

  /** Chunks of the runtime's start-up files in this layer, one per digest. */
  private runtimeChunks(): Chunk[] {
    const out = new Map<string, Chunk>();
    for (const { node } of runtimeFiles(this.index)) for (const c of node.chunks) out.set(c.digest, c);
    return [...out.values()];
  }

  /** Fetch every chunk not yet cached, at low priority; idempotent while running. */
  startBackgroundFetch(): void {
    if (this.background !== undefined && !this.background.stopped) return;
    this.background = new BackgroundFetcher(
      {
        chunks: this.blobOrder,
        isPresent: (digest) => this.isPresent(digest),
        fetchRun: async (run) => {
          await Promise.all(this.fetchTracked(run, this.readTimeoutMs, {}).values());
        },
      },
      {
        label: this.label,
        gate: this.gate,
        batchBytes: Math.min(this.opts.backgroundBatchBytes ?? DEFAULT_BACKGROUND_BATCH_BYTES, this.maxRequestBytes),
        quietMs: this.opts.backgroundQuietMs ?? DEFAULT_BACKGROUND_QUIET_MS,
        startDelayMs: this.opts.backgroundStartDelayMs ?? DEFAULT_BACKGROUND_START_DELAY_MS,
        retryDelayMs: this.opts.backgroundRetryDelayMs,
        log: this.log,
      },
    );
  }

  /** Stop the background fetch; a request it had in flight is abandoned. */
  async stopBackgroundFetch(): Promise<void> {
    await this.background?.stop();
  }

  /** True once the background fetch has walked the whole layer. */
  get backgroundFetchDone(): boolean {
    return this.background?.finished ?? false;
  }

  stats(): LayerStats {
    if (Date.now() - this.lastRefresh > STATS_REFRESH_MS) this.refreshLocal();
    return {
      totalBytes: this.index.dataSize,
      localBytes: this.localBytes,
      fetchedBytes: this.fetchedBytes,
      requests: this.requests,
      verifyFailures: this.verifyFailures,
      cacheHits: this.cacheHits,
      cacheMisses: this.cacheMisses,
      fetchSeconds: this.fetchSeconds.data(),
    };
  }

  // --- internals ---

  private isPresent(digest: string): boolean {
    return this.cache.has(digest) || this.inflight.has(digest);
  }

  private refreshLocal(): void {
    this.local.clear();
    this.localBytes = 0;
    for (const [digest, weight] of this.weights) {
      if (this.cache.has(digest)) {
        this.local.add(digest);
        this.localBytes += weight;
      }
    }
    this.lastRefresh = Date.now();
  }

  private markLocal(digest: string): void {
    if (this.local.has(digest) || !this.cache.has(digest)) return;
    const weight = this.weights.get(digest);
    if (weight === undefined) return;
    this.local.add(digest);
    this.localBytes += weight;
  }

  private readFailed(path: string | undefined, offset: number, length: number, reason: string, cause?: unknown): LazypullError {
    const last = cause === undefined ? '' : ` (last error: ${toError(cause).message})`;
    const error = new LazypullError(
      'LAZYPULL_ERR_READ_FAILED',
      `${this.label}: reading ${path ?? 'file'} at ${offset}+${length} failed: ${reason}${reason === toError(cause).message ? '' : last}`,
      { layer: this.label, file: path, offset, length, cause: isLazypullError(cause) ? cause.code : undefined },
      cause === undefined ? undefined : { cause },
    );
    readErrors.add(error);
    return error;
  }

  private async loadWithRetry(
    chunks: Chunk[],
    deadline: number,
    state: { done: boolean; lastError?: unknown },
    ctx: ChunkContext,
  ): Promise<Buffer[]> {
    let delay = FIRST_RETRY_DELAY_MS;
    for (;;) {
      try {
        const parts = await this.loadOnce(chunks, ctx);
        for (const chunk of chunks) this.markLocal(chunk.digest);
        return parts;
      } catch (err) {
        state.lastError = err;
        if (state.done || !isRetryable(err) || deadline - Date.now() < delay + 10) throw err;
        await sleep(delay);
        delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
        if (state.done) throw err;
      }
    }
  }

  /** Each chunk's bytes: joined from a fetch in flight, from the cache, or fetched (adjacent ones together). */
  private async loadOnce(chunks: Chunk[], ctx: ChunkContext): Promise<Buffer[]> {
    const parts: Array<Promise<Buffer> | undefined> = new Array(chunks.length);
    const missing = new Map<string, Chunk>();
    for (const [i, chunk] of chunks.entries()) {
      const running = this.inflight.get(chunk.digest);
      if (running !== undefined) parts[i] = running;
      else if (this.cache.has(chunk.digest)) {
        this.cacheHits++;
        parts[i] = this.track(chunk.digest, this.fromCache(chunk, ctx));
      } else if (!missing.has(chunk.digest)) missing.set(chunk.digest, chunk);
    }
    this.cacheMisses += missing.size;
    if (missing.size > 0) {
      const fetched = this.fetchTracked([...missing.values()], this.attemptTimeoutMs, ctx);
      for (const [i, chunk] of chunks.entries()) parts[i] ??= fetched.get(chunk.digest);
    }
    // Settle all before failing, so no fetch of this attempt is left for a later read to join.
    const settled = await Promise.allSettled(parts as Array<Promise<Buffer>>);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return settled.map((r) => (r as PromiseFulfilledResult<Buffer>).value);
  }

  private async fromCache(chunk: Chunk, ctx: ChunkContext): Promise<Buffer> {
    const data = await this.cache.get(chunk.digest);
    if (data !== undefined && data.length === chunk.size) return data;
    // Evicted since has(), or dropped as damaged: fetch it.
    return this.fetchUntracked([chunk], this.attemptTimeoutMs, ctx).get(chunk.digest)!;
  }

  /** Register a fetch so concurrent readers of the digest join it; forgotten once settled. */
  private track(digest: string, promise: Promise<Buffer>): Promise<Buffer> {
    this.inflight.set(digest, promise);
    promise
      .catch(() => undefined)
      .finally(() => {
        if (this.inflight.get(digest) === promise) this.inflight.delete(digest);
      });
    return promise;
  }

  private fetchTracked(chunks: Chunk[], timeoutMs: number, ctx: ChunkContext): Map<string, Promise<Buffer>> {
    const fetched = this.fetchUntracked(chunks, timeoutMs, ctx);
    for (const [digest, promise] of fetched) this.track(digest, promise);
    return fetched;
  }

  /** Group chunks (one per digest) into blob-contiguous runs under maxRequestBytes and fetch each run with one request. */
  private fetchUntracked(chunks: Chunk[], timeoutMs: number, ctx: ChunkContext): Map<string, Promise<Buffer>> {
    const sorted = [...chunks].sort((a, b) => a.blobOffset - b.blobOffset);
    const out = new Map<string, Promise<Buffer>>();
    let run: Chunk[] = [];
    const flush = (): void => {
      if (run.length === 0) return;
      const from = run[0]!.blobOffset;
      const to = run[run.length - 1]!.blobEnd;
      const raw = this.readBlob(from, to - from, timeoutMs);
      for (const chunk of run) {
        const p = raw.then((data) => this.verifyAndStore(chunk, data.subarray(chunk.blobOffset - from, chunk.blobEnd - from), ctx, timeoutMs));
        p.catch(() => undefined);
        out.set(chunk.digest, p);
      }
      run = [];
    };
    for (const chunk of sorted) {
      const last = run[run.length - 1];
      if (last !== undefined && (chunk.blobOffset !== last.blobEnd || chunk.blobEnd - run[0]!.blobOffset > this.maxRequestBytes)) flush();
      run.push(chunk);
    }
    flush();
    return out;
  }

  /** One range read, bounded in time and checked for length. */
  private async readBlob(offset: number, length: number, timeoutMs: number): Promise<Buffer> {
    this.requests++;
    const started = process.hrtime.bigint();
    let pending: Promise<Buffer>;
    try {
      pending = this.blob.readAt(offset, length);
    } catch (err) {
      pending = Promise.reject(err);
    }
    const data = await withTimeout(
      pending,
      timeoutMs,
      () =>
        new LazypullError('LAZYPULL_ERR_READ_FAILED', `${this.label}: range read ${offset}+${length} timed out after ${timeoutMs} ms`, {
          layer: this.label,
          offset,
          length,
        }),
    );
    this.fetchedBytes += data.length;
    this.fetchSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (data.length !== length) {
      throw new LazypullError('LAZYPULL_ERR_READ_FAILED', `${this.label}: range read ${offset}+${length} returned ${data.length} bytes`, {
        layer: this.label,
        offset,
        length,
      });
    }
    return data;
  }

  /** Decompress, verify, cache. A bad chunk is refetched once on its own, then refused. */
  private async verifyAndStore(chunk: Chunk, compressed: Buffer, ctx: ChunkContext, timeoutMs: number, refetched = false): Promise<Buffer> {
    let data: Buffer | undefined;
    let actual: string | undefined;
    let reason: string | undefined;
    try {
      data = await inflateChunk(compressed, chunk.size);
      actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    } catch (err) {
      reason = `gzip: ${toError(err).message}`;
    }
    if (data !== undefined && actual === chunk.digest) {
      await this.store(chunk.digest, data);
      return data;
    }
    this.verifyFailures++;
    const file = ctx.file ?? this.pathOf(chunk);
    this.log({
      event: 'chunk_digest_mismatch',
      layer: this.label,
      file,
      offset: chunk.fileOffset,
      blobOffset: chunk.blobOffset,
      expected: chunk.digest,
      actual: actual ?? null,
      ...(reason !== undefined ? { reason } : {}),
      willRetry: !refetched,
    });
    if (!refetched) {
      const again = await this.readBlob(chunk.blobOffset, chunk.blobEnd - chunk.blobOffset, timeoutMs);
      return this.verifyAndStore(chunk, again, ctx, timeoutMs, true);
    }
    throw new LazypullError(
      'LAZYPULL_ERR_DIGEST_MISMATCH',
      `${this.label}: chunk at offset ${chunk.fileOffset} of ${file ?? 'a file'} does not match its digest ${chunk.digest}` +
        (reason !== undefined ? ` (${reason})` : ''),
      { layer: this.label, file, offset: chunk.fileOffset, expected: chunk.digest, actual },
    );
  }

  private async store(digest: string, data: Buffer): Promise<void> {
    try {
      await this.cache.put(digest, data);
    } catch (err) {
      this.log({ event: 'cache_put_failed', layer: this.label, digest, error: toError(err).message });
      return;
    }
    this.markLocal(digest);
  }

  private pathOf(chunk: Chunk): string | undefined {
    if (this.pathsByOffset === undefined) {
      const paths = new Map<number, string>();
      const walk = (dir: Inode, prefix: string): void => {
        for (const [name, child] of dir.children ?? []) {
          const path = `${prefix}/${name}`;
          for (const c of child.chunks) if (!paths.has(c.blobOffset)) paths.set(c.blobOffset, path);
          if (child.children) walk(child, path);
        }
      };
      walk(this.index.root, '');
      this.pathsByOffset = paths;
    }
    return this.pathsByOffset.get(chunk.blobOffset);
  }
}

/** The chunks of a file (ordered by fileOffset, tiling it) that overlap [offset, end). */
function touchedChunks(chunks: Chunk[], offset: number, end: number): Chunk[] {
  let lo = 0;
  let hi = chunks.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const c = chunks[mid]!;
    if (c.fileOffset + c.size <= offset) lo = mid + 1;
    else hi = mid;
  }
  const out: Chunk[] = [];
  for (let i = lo; i < chunks.length && chunks[i]!.fileOffset < end; i++) out.push(chunks[i]!);
  return out;
}
