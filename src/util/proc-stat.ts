/**
 * A process's or thread's /proc stat file (`/proc/PID/stat`,
 * `/proc/PID/task/TID/stat`), read and split into the fields we use.
 * Linux only; undefined where the file cannot be read (the process or
 * thread has ended, or this is not Linux).
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  /** Field 3: R running, S sleeping, D disk wait, Z zombie, … */
  state: string;
  /** Field 22: clock ticks after boot. With the pid it tells a reused pid apart. */
  startTime: string;
  /** Fields 14 and 15: user and system CPU time, in clock ticks (USER_HZ). */
  cpuTicks: number;
}

export function readProcStat(path: string): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', startTime: fields[19] ?? '', cpuTicks: Number(fields[11]) + Number(fields[12]) };
}
