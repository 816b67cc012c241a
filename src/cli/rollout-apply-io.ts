/**
 * What `lazypull rollout apply` reads (the manifest) and prints (the
 * controller's answer), in one place: the command runs in the full CLI
 * (rollout-command.ts) or in the thin client the CLI's entry tries first
 * (thin-apply-client.ts), and users' scripts see the same either way.
 * Imports only small modules, so the thin client stays small.
 */
import { readFile } from 'node:fs/promises';
import { LazypullError } from '../errors';

/** The method and path of an apply on the controller's HTTP API (http-api.ts). */
export const APPLY_METHOD = 'PUT';
export const APPLY_PATH = '/clonesets';

export interface ApplyAnswer {
  name: string;
  updateRevision: string;
  created: boolean;
}

/** The manifest's text: the file, or stdin for `-`. */
export async function readManifest(file: string | undefined): Promise<string> {
  if (!file) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', 'rollout apply needs -f FILE (a CloneSet manifest; - reads stdin)');
  try {
    return file === '-' ? await readStdin() : await readFile(file, 'utf8');
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { file });
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** kubectl's line, or with --json the answer as one line of JSON. */
export function appliedOutput(answer: ApplyAnswer, json: boolean): string {
  if (json) return `${JSON.stringify(answer)}\n`;
  return `cloneset.apps.kruise.io/${answer.name} ${answer.created ? 'created' : 'configured'} (revision ${answer.updateRevision})\n`;
}
