/**
 * Turns a sequence of uncompressed pieces into gzip members written in
 * order. Pieces are gathered into batches and compressed on the worker pool
 * while later pieces are still being read; results are written strictly in
 * submission order, and each piece learns the blob offset of its member.
 * Memory stays bounded: once too many bytes are in flight, `push` waits for
 * the oldest batch to be written.
 */
import type { AtomicFile } from '../util/atomic-file';
import type { GzipPool } from './gzip-pool';

/** Called with the blob offset at which a piece's gzip member starts. */
export type OffsetCallback = (offset: number) => void;

interface Batch {
  pieces: Buffer[];
  callbacks: Array<OffsetCallback | undefined>;
  bytes: number;
}

interface SubmittedBatch {
  result: Promise<Buffer[]>;
  callbacks: Array<OffsetCallback | undefined>;
  bytes: number;
}

export interface MemberQueueOptions {
  /** Submit a batch once it holds this many bytes (small files are gathered up to it). */
  batchBytes?: number;
  /** Never hold more than this many uncompressed bytes in flight. */
  maxInFlightBytes?: number;
}

export class MemberQueue {
  private batch: Batch = { pieces: [], callbacks: [], bytes: 0 };
  private readonly submitted: SubmittedBatch[] = [];
  private inFlightBytes = 0;
  private readonly batchBytes: number;
  private readonly maxInFlightBytes: number;

  constructor(private readonly pool: GzipPool, private readonly out: AtomicFile, opts: MemberQueueOptions = {}) {
    this.batchBytes = opts.batchBytes ?? 1 << 20;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? 32 << 20;
  }

  /** Queue one piece (given as parts, concatenated) to become one gzip member. */
  async push(parts: Buffer[], onOffset?: OffsetCallback): Promise<void> {
    const piece = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.batch.pieces.push(piece);
    this.batch.callbacks.push(onOffset);
    this.batch.bytes += piece.length;
    if (this.batch.bytes >= this.batchBytes || this.batch.pieces.length >= 4096) this.submit();
    while (this.inFlightBytes > this.maxInFlightBytes) await this.writeOldest();
  }

  private submit(): void {
    if (this.batch.pieces.length === 0) return;
    const { pieces, callbacks, bytes } = this.batch;
    const result = this.pool.compress(pieces);
    // Rejections are handled when the batch is written; avoid an unhandled-rejection crash meanwhile.
    result.catch(() => undefined);
    this.submitted.push({ result, callbacks, bytes });
    this.inFlightBytes += bytes;
    this.batch = { pieces: [], callbacks: [], bytes: 0 };
  }

  private async writeOldest(): Promise<void> {
    const head = this.submitted.shift();
    if (!head) return;
    const members = await head.result;
    let offset = this.out.position;
    for (let i = 0; i < members.length; i++) {
      head.callbacks[i]?.(offset);
      offset += members[i].length;
    }
    await this.out.write(members.length === 1 ? members[0] : Buffer.concat(members));
    this.inFlightBytes -= head.bytes;
  }

  /** Compress and write everything queued so far. */
  async flush(): Promise<void> {
    this.submit();
    while (this.submitted.length > 0) await this.writeOldest();
  }
}
