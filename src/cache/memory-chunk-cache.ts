/**
 * Chunks in memory, bounded by total bytes, least recently used evicted
 * first. A Map keeps insertion order, so re-inserting on access makes its
 * first key the least recently used one.
 */
import { digestHex, type ChunkCache } from './chunk-cache';

export class MemoryChunkCache implements ChunkCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(readonly maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`maxBytes must be a byte count, got ${maxBytes}`);
  }

  async get(digest: string): Promise<Buffer | undefined> {
    const data = this.entries.get(digest);
    if (data === undefined) return undefined;
    this.entries.delete(digest);
    this.entries.set(digest, data);
    return data;
  }

  async put(digest: string, data: Buffer): Promise<void> {
    digestHex(digest);
    const existing = this.entries.get(digest);
    if (existing !== undefined) {
      this.entries.delete(digest);
      this.entries.set(digest, existing);
      return;
    }
    // Larger than the whole cache: keeping it would only flush everything else.
    if (data.length > this.maxBytes) return;
    this.entries.set(digest, data);
    this.bytes += data.length;
    for (const [key, value] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(key);
      this.bytes -= value.length;
    }
  }

  has(digest: string): boolean {
    return this.entries.has(digest);
  }

  usage(): { bytes: number; entries: number } {
    return { bytes: this.bytes, entries: this.entries.size };
  }
}
