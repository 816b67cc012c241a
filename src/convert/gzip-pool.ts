/**
 * A fixed pool of worker threads that turn pieces of bytes into gzip
 * members, so a conversion uses every core. Each call compresses one batch;
 * batches go to the least-loaded worker.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { GzipJob, GzipResult } from './gzip-worker';

/** The worker's own file, also when this code runs bundled into the CLI (dist/src/cli/main.js). */
const WORKER_PATH = join(__dirname, '..', 'convert', 'gzip-worker.js');

interface PendingJob {
  resolve: (members: Buffer[]) => void;
  reject: (err: Error) => void;
  worker: WorkerSlot;
}

interface WorkerSlot {
  worker: Worker;
  inFlight: number;
}

export class GzipPool {
  private readonly slots: WorkerSlot[] = [];
  private readonly pending = new Map<number, PendingJob>();
  private nextId = 1;
  private closed = false;

  constructor(readonly level: number, threads = availableParallelism()) {
    for (let i = 0; i < Math.max(1, threads); i++) this.slots.push(this.spawn());
  }

  private spawn(): WorkerSlot {
    const slot: WorkerSlot = { worker: new Worker(WORKER_PATH), inFlight: 0 };
    slot.worker.on('message', (result: GzipResult) => this.onResult(slot, result));
    slot.worker.on('error', (err) => this.failAll(slot, err));
    slot.worker.on('exit', (code) => {
      if (!this.closed) this.failAll(slot, new Error(`gzip worker exited with code ${code}`));
    });
    // Idle workers must not keep the process alive.
    slot.worker.unref();
    return slot;
  }

  /** Compress each piece into its own gzip member, in order. */
  compress(pieces: Buffer[]): Promise<Buffer[]> {
    if (this.closed) return Promise.reject(new Error('gzip pool is closed'));
    const lengths = pieces.map((p) => p.length);
    const total = lengths.reduce((a, b) => a + b, 0);
    const data = new ArrayBuffer(total);
    const view = Buffer.from(data);
    let offset = 0;
    for (const piece of pieces) {
      view.set(piece, offset);
      offset += piece.length;
    }
    const slot = this.slots.reduce((best, s) => (s.inFlight < best.inFlight ? s : best));
    const id = this.nextId++;
    const job: GzipJob = { id, level: this.level, data, lengths };
    return new Promise<Buffer[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: slot });
      slot.inFlight++;
      if (slot.inFlight === 1) slot.worker.ref();
      slot.worker.postMessage(job, [data]);
    });
  }

  private onResult(slot: WorkerSlot, result: GzipResult): void {
    const job = this.pending.get(result.id);
    if (!job) return;
    this.pending.delete(result.id);
    slot.inFlight--;
    if (slot.inFlight === 0) slot.worker.unref();
    if (result.error !== undefined || !result.data || !result.lengths) {
      job.reject(new Error(`gzip failed: ${result.error ?? 'no result'}`));
      return;
    }
    const all = Buffer.from(result.data);
    const members: Buffer[] = [];
    let offset = 0;
    for (const length of result.lengths) {
      members.push(all.subarray(offset, offset + length));
      offset += length;
    }
    job.resolve(members);
  }

  private failAll(slot: WorkerSlot, err: Error): void {
    for (const [id, job] of this.pending) {
      if (job.worker === slot) {
        this.pending.delete(id);
        job.reject(err);
      }
    }
    slot.inFlight = 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
