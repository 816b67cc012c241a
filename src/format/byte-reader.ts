/**
 * Pull-style reader over an async stream of Buffers: the tar parser asks for
 * exactly the bytes it needs and gets slices of the incoming chunks, so bulk
 * file data is never copied on its way through.
 */
export type ByteSource = AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>;

export class ByteReader {
  private readonly source: AsyncIterator<Buffer>;
  private current: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes handed out so far: the position in the stream. */
  position = 0;

  constructor(source: ByteSource) {
    const iterator: AsyncIterator<Buffer | Uint8Array | string> | Iterator<Buffer | Uint8Array | string> =
      Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
    this.source = {
      next: async () => {
        const r = await iterator.next();
        if (r.done) return r;
        const v = r.value;
        return { done: false, value: typeof v === 'string' ? Buffer.from(v) : Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength) };
      },
      return: async () => {
        if (iterator.return) await iterator.return();
        return { done: true, value: undefined };
      },
    };
  }

  private async fill(): Promise<boolean> {
    while (this.current.length === 0) {
      if (this.ended) return false;
      const r = await this.source.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      this.current = r.value;
    }
    return true;
  }

  /** Up to `max` bytes (at least one), or null at the end of the stream. */
  async read(max: number): Promise<Buffer | null> {
    if (!(await this.fill())) return null;
    const n = Math.min(max, this.current.length);
    const out = this.current.subarray(0, n);
    this.current = this.current.subarray(n);
    this.position += n;
    return out;
  }

  /** Exactly `n` bytes, or fewer only if the stream ended first. */
  async readExact(n: number): Promise<Buffer> {
    const first = await this.read(n);
    if (first === null) return Buffer.alloc(0);
    if (first.length === n) return first;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const part = await this.read(n - got);
      if (part === null) break;
      parts.push(part);
      got += part.length;
    }
    return Buffer.concat(parts, got);
  }

  /** Skip `n` bytes; returns how many were actually skipped. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const part = await this.read(left);
      if (part === null) break;
      left -= part.length;
    }
    return n - left;
  }

  /** Stop the underlying source (closes file handles of a stream). */
  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      if (this.source.return) await this.source.return();
    }
  }
}
