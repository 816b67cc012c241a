/**
 * Run a command and measure wall time plus the CPU time of the command and
 * its children (bash's `times`), so single-threaded and multi-core tools can
 * be compared on the same 2-core machine.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface Timing {
  wallSec: number;
  /** user + sys of the command and everything it waited for. */
  cpuSec: number;
  stdout: string;
}

function parseTimesLine(line: string): number {
  // "0m1.234s 0m0.567s"
  let total = 0;
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) total += Number(m[1]) * 60 + Number(m[2]);
  return total;
}

export async function timeCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Timing> {
  const script = 'exec 3>&1; "$@" >&3; rc=$?; times >&2; exit $rc';
  const start = process.hrtime.bigint();
  const { stdout, stderr } = await execFileP('bash', ['-c', script, 'bash', cmd, ...args], {
    env,
    maxBuffer: 64 * 1024 * 1024,
  });
  const wallSec = Number(process.hrtime.bigint() - start) / 1e9;
  const lines = stderr.trim().split('\n');
  const children = lines[lines.length - 1] ?? '';
  return { wallSec, cpuSec: parseTimesLine(children), stdout };
}
