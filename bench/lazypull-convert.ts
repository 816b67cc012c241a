/** lazypull's converter on the benchmark layer, through the CLI a user runs. */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchLayer } from './bench-layer';
import { Timing, timeCommand } from './timed-command';

export const LAZYPULL_CLI = join(__dirname, '..', 'src', 'cli', 'main.js');

export interface LazypullResult extends Timing {
  level: number;
  outputBytes: number;
}

export function lazypullAvailable(): boolean {
  return existsSync(LAZYPULL_CLI);
}

export async function benchLazypull(layer: BenchLayer, levels: number[], log: (line: string) => void): Promise<LazypullResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'lzp-bench-lzp-'));
  const results: LazypullResult[] = [];
  try {
    for (const level of levels) {
      log(`lazypull convert-layer --level ${level} ...`);
      const out = join(work, `layer-${level}.esgz`);
      const timing = await timeCommand(process.execPath, [LAZYPULL_CLI, 'convert-layer', layer.tarGzPath, out, '--level', String(level), '--json']);
      const reported = JSON.parse(timing.stdout) as { uncompressedSize?: number };
      if (reported.uncompressedSize !== undefined && reported.uncompressedSize < layer.tarSize) {
        throw new Error(`lazypull wrote a ${reported.uncompressedSize}-byte tar from a ${layer.tarSize}-byte one`);
      }
      results.push({ ...timing, level, outputBytes: (await stat(out)).size });
      await rm(out, { force: true });
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return results;
}
