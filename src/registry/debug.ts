/**
 * Tracing for the registry client, silent unless LAZYPULL_DEBUG names
 * "registry" (comma-separated list, or "*"). Lines go to stderr and pass
 * through `redact` so a stray header value never reaches a terminal or a log.
 */

import { redact } from '../errors';

function enabled(): boolean {
  const setting = process.env.LAZYPULL_DEBUG ?? '';
  return setting.split(',').some((name) => {
    const trimmed = name.trim();
    return trimmed === '*' || trimmed === 'registry';
  });
}

export function debug(message: string): void {
  if (!enabled()) return;
  process.stderr.write(`${new Date().toISOString()} lazypull:registry ${redact(message)}\n`);
}
