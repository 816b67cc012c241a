/**
 * A BlobReader wrapper that injects faults into range reads of a real blob:
 * flipped bytes, thrown errors, reads that never settle, short reads, delays,
 * or any substitution a test supplies. Faults apply to the next `times`
 * reads (default: until changed). Every read is recorded.
 */
import type { BlobReader } from '../../src/format/toc-reader';

export type BlobFault =
  | { kind: 'none' }
  | { kind: 'flip' }
  | { kind: 'throw'; message?: string }
  | { kind: 'stall' }
  | { kind: 'short' }
  /** Replace the response bytes: gets the real ones, returns what the reader sees. */
  | { kind: 'replace'; replace: (offset: number, data: Buffer) => Buffer };

export interface RecordedRead {
  offset: number;
  length: number;
  at: number;
  fault: BlobFault['kind'];
}

export class FaultyBlob implements BlobReader {
  readonly reads: RecordedRead[] = [];
  /** Added before every read, faulty or not. */
  delayMs = 0;
  private fault: BlobFault | (() => BlobFault) = { kind: 'none' };
  private remaining = Infinity;
  /** Reads left pending forever by a stall fault. */
  stalled = 0;

  constructor(private readonly inner: BlobReader) {}

  get size(): number {
    return this.inner.size;
  }

  /** Apply `fault` (or what the function picks, per read) to the next `times` reads, then none. */
  setFault(fault: BlobFault | (() => BlobFault), times = Infinity): void {
    this.fault = fault;
    this.remaining = times;
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    let fault: BlobFault = { kind: 'none' };
    if (this.remaining > 0) {
      fault = typeof this.fault === 'function' ? this.fault() : this.fault;
      this.remaining--;
    }
    this.reads.push({ offset, length, at: Date.now(), fault: fault.kind });
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    switch (fault.kind) {
      case 'throw':
        throw new Error(fault.message ?? 'injected fault: connection reset by peer');
      case 'stall':
        this.stalled++;
        return new Promise<Buffer>(() => undefined);
      case 'none':
        return this.inner.readAt(offset, length);
      case 'short':
        return (await this.inner.readAt(offset, length)).subarray(0, Math.floor(length / 2));
      case 'flip': {
        const data = Buffer.from(await this.inner.readAt(offset, length));
        // Flip bytes spread over the response: headers, deflate data and trailers alike.
        for (let i = data.length >> 1; i < data.length; i += 97) data[i] = data[i]! ^ 0xff;
        if (data.length > 0) data[data.length >> 2] = data[data.length >> 2]! ^ 0x55;
        return data;
      }
      case 'replace':
        return fault.replace(offset, await this.inner.readAt(offset, length));
    }
  }
}
