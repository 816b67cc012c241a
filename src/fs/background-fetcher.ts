/**
 * Background fetch: after mount, walk the layer's chunks in blob order and
 * bring every missing one into the cache, a moderate batch per request, at
 * low priority. It steps aside while the container reads: it begins only
 * `startDelayMs` after it was started (a layer is mounted for a container
 * that is about to start, and the node is busiest then), and before each
 * batch it waits until no foreground read has been in flight for a short
 * quiet period. Looking up which chunks are cached already (all of them,
 * for a layer whose files another version of the image brought) runs in
 * short slices, so it never holds up the reads the mount serves. Failures
 * are logged and retried with backoff; a batch that keeps failing is
 * skipped (a foreground read will try it again when needed).
 */
import type { Chunk } from './layer-index';

/** Longest stretch of cache lookups between two turns of the event loop (a lookup may list a cache directory). */
const SCAN_SLICE_MS = 2;

/** Counts foreground reads in flight, so background work can wait for quiet. */
export class ForegroundGate {
  private active = 0;
  private lastLeave = 0;
  private waiters: Array<() => void> = [];

  enter(): void {
    this.active++;
  }

  leave(): void {
    this.active--;
    this.lastLeave = Date.now();
    if (this.active === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const wake of waiters) wake();
    }
  }

  get busy(): boolean {
    return this.active > 0;
  }

  /** Resolves once no foreground read has been in flight for `quietMs`, or when `stop` settles. */
  async waitQuiet(quietMs: number, stop: StopSignal): Promise<void> {
    while (!stop.stopped) {
      if (this.active > 0) {
        await Promise.race([new Promise<void>((resolve) => this.waiters.push(resolve)), stop.promise]);
        continue;
      }
      const idle = Date.now() - this.lastLeave;
      if (idle >= quietMs) return;
      await stop.sleep(quietMs - idle);
    }
  }
}

/** A one-shot stop flag that can also be awaited, and sleeps that end early on stop. */
export class StopSignal {
  stopped = false;
  private resolveStop!: () => void;
  readonly promise = new Promise<void>((resolve) => (this.resolveStop = resolve));

  stop(): void {
    this.stopped = true;
    this.resolveStop();
  }

  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      void this.promise.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/** What the fetcher needs from the layer reader. */
export interface BackgroundSource {
  /** Chunks to fetch, one per digest, in blob order. */
  readonly chunks: readonly Chunk[];
  /** Cached already, or being fetched by someone else. */
  isPresent(digest: string): boolean;
  /** Fetch one blob-contiguous run, verify and cache it; rejects on failure. */
  fetchRun(run: Chunk[]): Promise<void>;
}

export interface BackgroundFetcherOptions {
  label: string;
  gate: ForegroundGate;
  /** Largest compressed range per request. */
  batchBytes: number;
  /** Quiet time after the last foreground read before a batch starts. */
  quietMs: number;
  /** Nothing is looked up or fetched until this long after the start. Default 0. */
  startDelayMs?: number;
  /** First backoff after a failure; doubles up to 30 s. */
  retryDelayMs?: number;
  /** Consecutive failures of one batch before it is skipped. */
  maxAttempts?: number;
  log: (event: Record<string, unknown>) => void;
}

export class BackgroundFetcher {
  private readonly signal = new StopSignal();
  private readonly done: Promise<void>;
  /** Set when the walk reached the end of the layer. */
  finished = false;

  constructor(
    private readonly source: BackgroundSource,
    private readonly opts: BackgroundFetcherOptions,
  ) {
    this.done = this.run().catch((err: unknown) => {
      opts.log({ event: 'background_fetch_error', layer: opts.label, error: String(err) });
    });
  }

  get stopped(): boolean {
    return this.signal.stopped;
  }

  /** Stop after the current batch's request is abandoned (not awaited); resolves when the walk has ended. */
  async stop(): Promise<void> {
    this.signal.stop();
    await this.done;
  }

  private async run(): Promise<void> {
    const { source, opts, signal } = this;
    const chunks = source.chunks;
    const retryDelayMs = opts.retryDelayMs ?? 500;
    const maxAttempts = opts.maxAttempts ?? 5;
    const started = Date.now();
    if (opts.startDelayMs) await signal.sleep(opts.startDelayMs);
    let fetchedBytes = 0;
    let requests = 0;
    let skipped = 0;
    let failures = 0;
    let i = 0;
    /** The first chunk from `from` on that is not cached, looked up in slices of at most SCAN_SLICE_MS. */
    const nextMissing = async (from: number): Promise<number> => {
      let k = from;
      let sliceStart = performance.now();
      while (k < chunks.length && source.isPresent(chunks[k]!.digest)) {
        k++;
        if (performance.now() - sliceStart >= SCAN_SLICE_MS) {
          await new Promise((resolve) => setImmediate(resolve));
          if (signal.stopped) return k;
          sliceStart = performance.now();
        }
      }
      return k;
    };
    while (!signal.stopped) {
      i = await nextMissing(i);
      if (signal.stopped || i >= chunks.length) break;
      await opts.gate.waitQuiet(opts.quietMs, signal);
      if (signal.stopped) break;
      // The foreground may have fetched some while we waited.
      i = await nextMissing(i);
      if (signal.stopped || i >= chunks.length) break;
      const batch = [chunks[i]!];
      let j = i + 1;
      while (j < chunks.length) {
        const next = chunks[j]!;
        const last = batch[batch.length - 1]!;
        if (source.isPresent(next.digest) || next.blobOffset !== last.blobEnd) break;
        if (next.blobEnd - batch[0]!.blobOffset > opts.batchBytes) break;
        batch.push(next);
        j++;
      }
      const from = batch[0]!.blobOffset;
      const bytes = batch[batch.length - 1]!.blobEnd - from;
      try {
        requests++;
        const fetching = source.fetchRun(batch);
        // Still settles after a stop; nobody may be listening then.
        fetching.catch(() => undefined);
        await Promise.race([fetching, signal.promise]);
        if (signal.stopped) break;
        fetchedBytes += bytes;
        failures = 0;
        i = j;
      } catch (err) {
        failures++;
        opts.log({ event: 'background_fetch_error', layer: opts.label, blobOffset: from, bytes, attempt: failures, error: String(err) });
        if (failures >= maxAttempts) {
          opts.log({ event: 'background_fetch_skip', layer: opts.label, blobOffset: from, bytes });
          skipped += batch.length;
          failures = 0;
          i = j;
        } else {
          await signal.sleep(Math.min(retryDelayMs * 2 ** (failures - 1), 30_000));
        }
      }
    }
    if (!signal.stopped) {
      this.finished = true;
      opts.log({ event: 'background_fetch_done', layer: opts.label, fetchedBytes, requests, skippedChunks: skipped, ms: Date.now() - started });
    }
  }
}
