/** Parsing of option values shared by commands. */
import { promises as fs } from 'node:fs';
import { LazypullError } from '../errors';

export function parseIntegerOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${flag} expects a non-negative integer, got "${value}"`);
  }
  return Number(value.trim());
}

/** A list file: one path per line; blank lines and lines starting with # are ignored. */
export async function readListFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `cannot read list file ${path} (${(err as NodeJS.ErrnoException).code})`);
  }
  return text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}
