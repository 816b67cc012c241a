/**
 * Worker thread body for GzipPool: compresses each piece of a batch into its
 * own gzip member. Synchronous zlib inside a worker costs a fraction of an
 * async zlib call per piece, which matters for layers of many small files.
 */
import { parentPort } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';

export interface GzipJob {
  id: number;
  level: number;
  /** All pieces of the batch, back to back. */
  data: ArrayBuffer;
  lengths: number[];
}

export interface GzipResult {
  id: number;
  data?: ArrayBuffer;
  lengths?: number[];
  error?: string;
}

if (parentPort) {
  const port = parentPort;
  port.on('message', (job: GzipJob) => {
    try {
      const input = Buffer.from(job.data);
      const members: Buffer[] = [];
      let offset = 0;
      for (const length of job.lengths) {
        members.push(gzipSync(input.subarray(offset, offset + length), { level: job.level }));
        offset += length;
      }
      const out = Buffer.concat(members);
      // Copy into a buffer that owns its memory so it can be transferred, not cloned.
      const owned = new ArrayBuffer(out.length);
      Buffer.from(owned).set(out);
      const result: GzipResult = { id: job.id, data: owned, lengths: members.map((m) => m.length) };
      port.postMessage(result, [owned]);
    } catch (err) {
      const result: GzipResult = { id: job.id, error: err instanceof Error ? err.message : String(err) };
      port.postMessage(result);
    }
  });
}
