/**
 * Progress for long CLI operations: a bar on an interactive terminal,
 * nothing at all in scripts (no TTY) or when JSON output was asked for.
 */
import { SingleBar, Presets } from 'cli-progress';

export interface Progress {
  /** Set the total (bytes) once known. */
  setTotal(total: number): void;
  update(done: number): void;
  stop(): void;
}

const SILENT: Progress = { setTotal: () => undefined, update: () => undefined, stop: () => undefined };

function mib(bytes: number): string {
  return (bytes / (1 << 20)).toFixed(1);
}

export function createProgress(label: string, opts: { json?: boolean } = {}): Progress {
  if (opts.json || !process.stderr.isTTY) return SILENT;
  const bar = new SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    Presets.shades_classic,
  );
  let started = false;
  let total = 0;
  return {
    setTotal(t: number) {
      total = t;
      if (!started) {
        bar.start(t, 0, { doneMiB: mib(0), totalMiB: mib(t) });
        started = true;
      } else bar.setTotal(t);
    },
    update(done: number) {
      if (started) bar.update(Math.min(done, total), { doneMiB: mib(done), totalMiB: mib(total) });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
