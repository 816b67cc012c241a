/**
 * How a `lazypull` command ends, the same in the full CLI (main.ts) and in
 * the thin clients the CLI's entry runs before it (daemon-pull-client.ts,
 * thin-apply-client.ts): a failure is one line on stderr and exit code 1; a
 * reader of stdout that goes away early is no failure. Imports only
 * errors.ts, so the thin clients stay small.
 */
import { isLazypullError, redact, toError } from '../errors';

/** `lazypull: MESSAGE [CODE]` on stderr (the stack too with $LAZYPULL_DEBUG), exit code 1. */
export function reportError(value: unknown): void {
  const err = toError(value);
  const code = isLazypullError(err) ? ` [${err.code}]` : '';
  process.stderr.write(`lazypull: ${redact(err.message)}${code}\n`);
  if (process.env.LAZYPULL_DEBUG && err.stack) process.stderr.write(`${redact(err.stack)}\n`);
  process.exitCode = 1;
}

/** A reader that goes away early (`lazypull toc X | head`) is not an error: exit quietly. */
export function exitQuietlyOnEpipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}
