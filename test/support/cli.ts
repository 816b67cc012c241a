/** Run the built `lazypull` CLI as a user would, in a child process. */
import { execFile } from 'node:child_process';
import { join } from 'node:path';

export const CLI_PATH = join(__dirname, '..', '..', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI_PATH, ...args],
      { env: { ...process.env, ...opts.env }, cwd: opts.cwd, timeout: opts.timeoutMs ?? 600_000, maxBuffer: 256 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
      },
    );
  });
}

/** Run and require success; the error shows stderr. */
export async function runCliOk(args: string[], opts: Parameters<typeof runCli>[1] = {}): Promise<CliResult> {
  const result = await runCli(args, opts);
  if (result.code !== 0) throw new Error(`lazypull ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return result;
}
