/**
 * Codec micro-benchmark: node:zlib (native zlib) against pako (pure JS) on
 * the same realistic data, to justify which one the converter's hot path uses.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import * as pako from 'pako';

export interface CodecRow {
  operation: string;
  zlibMBps: number;
  pakoMBps: number;
  /** zlib throughput / pako throughput. */
  ratio: number;
  note: string;
}

/** Best of `runs` (seconds): the least disturbed run on a shared machine. */
function best(runs: number, fn: () => void): number {
  let min = Infinity;
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    fn();
    min = Math.min(min, Number(process.hrtime.bigint() - t) / 1e9);
  }
  return min;
}

export function benchCodecs(data: Buffer, runs = 3): CodecRow[] {
  const mb = data.length / 1e6;
  const rows: CodecRow[] = [];
  for (const level of [9, 6] as const) {
    let zOut = 0;
    let pOut = 0;
    const z = best(runs, () => {
      zOut = gzipSync(data, { level }).length;
    });
    const p = best(runs, () => {
      pOut = pako.gzip(data, { level }).length;
    });
    rows.push({
      operation: `gzip level ${level}`,
      zlibMBps: mb / z,
      pakoMBps: mb / p,
      ratio: p / z,
      note: `output ${(zOut / 1e6).toFixed(1)} MB (zlib) / ${(pOut / 1e6).toFixed(1)} MB (pako)`,
    });
  }
  const compressed = gzipSync(data, { level: 6 });
  const zi = best(runs, () => gunzipSync(compressed));
  const pi = best(runs, () => pako.ungzip(compressed));
  rows.push({ operation: 'gunzip (inflate)', zlibMBps: mb / zi, pakoMBps: mb / pi, ratio: pi / zi, note: 'MB/s of uncompressed output' });
  return rows;
}
