/**
 * A small memory cache in front of a larger one (the disk cache): reads
 * try memory first and promote what the back tier returns; writes land in
 * memory at once and reach the back tier in the background, so a read is
 * not held up by a disk write. `flush()` waits for those writes.
 */
import { toError } from '../errors';
import type { ChunkCache } from './chunk-cache';

export interface TieredChunkCacheOptions {
  /** Called when a background write to the back tier fails (e.g. ENOSPC). */
  onWriteError?: (digest: string, error: Error) => void;
}

export class TieredChunkCache implements ChunkCache {
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    readonly front: ChunkCache,
    readonly back: ChunkCache,
    private readonly opts: TieredChunkCacheOptions = {},
  ) {}

  async get(digest: string): Promise<Buffer | undefined> {
    const hot = await this.front.get(digest);
    if (hot !== undefined) return hot;
    const cold = await this.back.get(digest);
    if (cold !== undefined) await this.front.put(digest, cold);
    return cold;
  }

  async put(digest: string, data: Buffer): Promise<void> {
    await this.front.put(digest, data);
    if (this.back.has(digest) || this.pending.has(digest)) return;
    const write = this.back
      .put(digest, data)
      .catch((err: unknown) => this.opts.onWriteError?.(digest, toError(err)))
      .finally(() => this.pending.delete(digest));
    this.pending.set(digest, write);
  }

  has(digest: string): boolean {
    return this.front.has(digest) || this.back.has(digest);
  }

  /** Wait until every write handed to the back tier so far has finished. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }
}
