/**
 * containerd's content store over gRPC: existence checks, labels (the
 * garbage collector follows `containerd.io/gc.ref.*` labels from one blob
 * to the next), and streamed writes that containerd verifies against the
 * expected size and digest before committing.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { LazypullError } from '../errors';
import { ContainerdError, fromCallError, isContainerdError } from './containerd-errors';
import type { ContainerdConnection } from './grpc-connection';

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export interface ContentWriteOptions {
  /** Ingest name; concurrent writers of the same ref wait for each other. Default `lazypull-<digest>`. */
  ref?: string;
  /** Called with the bytes sent so far. */
  onProgress?: (done: number) => void;
  /** Largest message; default 1 MiB. */
  chunkSize?: number;
  /** How long to wait for another writer holding the same ref; default 120000. */
  lockWaitMs?: number;
}

export type WriteOutcome = 'written' | 'exists';

interface WireInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

interface WriteResponse {
  action: string;
  offset: number;
  total: number;
  digest: string;
}

/** Request/response over the Write stream: containerd answers each message in order. */
class WriteExchange {
  private readonly responses: AsyncIterator<unknown>;

  constructor(private readonly call: ClientDuplexStream<unknown, unknown>, private readonly address: string) {
    this.responses = call[Symbol.asyncIterator]();
  }

  async send(request: Record<string, unknown>): Promise<WriteResponse> {
    try {
      this.call.write(request);
      const next = await this.responses.next();
      if (next.done) throw new ContainerdError('INTERNAL', 'containerd content.Write: stream ended without an answer', { address: this.address });
      return next.value as WriteResponse;
    } catch (err) {
      throw fromCallError(err, 'content.Write', this.address);
    }
  }

  async finish(): Promise<void> {
    this.call.end();
    try {
      // Wait for the server to close its side; nothing more is expected.
      while (!(await this.responses.next()).done);
    } catch {
      // The commit was already confirmed; a late stream error changes nothing.
    }
  }

  abort(): void {
    this.call.cancel();
  }
}

function* slices(data: Buffer, size: number): Generator<Buffer> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, Math.min(at + size, data.length));
}

export class ContentStore {
  constructor(private readonly conn: ContainerdConnection) {}

  /** The blob's info, or undefined if this namespace has no such blob. */
  async info(digest: string): Promise<ContentInfo | undefined> {
    try {
      const res = await this.conn.unary<{ info: WireInfo }>('content', 'Info', { digest });
      return { digest: res.info.digest, size: Number(res.info.size), labels: { ...res.info.labels } };
    } catch (err) {
      if (isContainerdError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /** Set (merge) labels on a committed blob; other labels stay as they are. */
  async setLabels(digest: string, labels: Record<string, string>): Promise<ContentInfo> {
    const keys = Object.keys(labels);
    const res = await this.conn.unary<{ info: WireInfo }>('content', 'Update', {
      info: { digest, labels },
      update_mask: { paths: keys.map((k) => `labels.${k}`) },
    });
    return { digest: res.info.digest, size: Number(res.info.size), labels: { ...res.info.labels } };
  }

  /**
   * Stream `data` into the store as the blob `digest` of `size` bytes.
   * containerd checks both before committing; a blob the namespace already
   * has is not written again ('exists').
   */
  async write(desc: { digest: string; size: number }, data: Buffer | AsyncIterable<Buffer | Uint8Array>, opts: ContentWriteOptions = {}): Promise<WriteOutcome> {
    const ref = opts.ref ?? `lazypull-${desc.digest}`;
    const deadline = Date.now() + (opts.lockWaitMs ?? 120_000);
    for (;;) {
      try {
        return await this.writeOnce(ref, desc, data, opts);
      } catch (err) {
        if (isContainerdError(err, 'ALREADY_EXISTS')) return 'exists';
        // Another writer holds the ref: once it commits, the blob exists.
        const locked = isContainerdError(err, 'UNAVAILABLE') && /locked/i.test(err.message);
        if (!locked) throw err;
        if (await this.info(desc.digest)) return 'exists';
        // A stream cannot be replayed; a buffer can, until the deadline.
        if (!Buffer.isBuffer(data) || Date.now() > deadline) throw err;
        await sleep(200);
      }
    }
  }

  private async writeOnce(ref: string, desc: { digest: string; size: number }, data: Buffer | AsyncIterable<Buffer | Uint8Array>, opts: ContentWriteOptions): Promise<WriteOutcome> {
    const chunkSize = opts.chunkSize ?? 1 << 20;
    const exchange = new WriteExchange(this.conn.duplex('content', 'Write'), this.conn.address);
    let committed = false;
    try {
      // STAT opens (or resumes) the ingest; the first WRITE at offset 0 discards anything left from an earlier attempt.
      await exchange.send({ action: 'STAT', ref, total: desc.size, expected: desc.digest });
      let offset = 0;
      const sendSlice = async (slice: Buffer): Promise<void> => {
        const res = await exchange.send({ action: 'WRITE', ref, offset, data: slice });
        offset += slice.length;
        if (Number(res.offset) !== offset) {
          throw new ContainerdError('DATA_LOSS', `containerd content.Write: ingest ${ref} is at ${res.offset} bytes, expected ${offset}`, { ref });
        }
        opts.onProgress?.(offset);
      };
      if (Buffer.isBuffer(data)) {
        for (const slice of slices(data, chunkSize)) await sendSlice(slice);
      } else {
        for await (const piece of data) {
          const buf = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
          for (const slice of slices(buf, chunkSize)) await sendSlice(slice);
        }
      }
      if (offset !== desc.size) {
        throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `blob ${desc.digest} has ${offset} bytes, expected ${desc.size}`, { digest: desc.digest, size: offset });
      }
      const res = await exchange.send({ action: 'COMMIT', ref, offset, total: desc.size, expected: desc.digest });
      if (res.digest && res.digest !== desc.digest) {
        throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `containerd stored ${desc.digest} as ${res.digest}`, { digest: desc.digest, actual: res.digest });
      }
      committed = true;
      return 'written';
    } finally {
      if (committed) await exchange.finish();
      else exchange.abort();
    }
  }
}
