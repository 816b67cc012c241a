/**
 * Start-up phase timestamps across processes, for finding where a cold
 * start spends its time: with LAZYPULL_TRACE=FILE in the environment, the
 * CLI, the snapshotter daemon and its layer servers each append
 * "EPOCH_MS PID EVENT" lines to FILE (the cold-start benchmark sets it and
 * prints the breakdown). Off, it costs one comparison.
 */
import { appendFileSync } from 'node:fs';

const TRACE_FILE = process.env.LAZYPULL_TRACE;

export function trace(event: string): void {
  if (!TRACE_FILE) return;
  try {
    appendFileSync(TRACE_FILE, `${(performance.timeOrigin + performance.now()).toFixed(1)} ${process.pid} ${event}\n`);
  } catch {
    // A trace that cannot be written must not break the work it describes.
  }
}
