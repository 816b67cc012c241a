/** The version a tool prints, for the benchmark report ("not installed" when it is missing). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args);
    return (stdout.match(/\d+\.\d+[\w.~+-]*/) ?? ['?'])[0];
  } catch {
    return 'not installed';
  }
}
