/**
 * What the controller's HTTP API answers mean to the CLI (rollout-command.ts
 * and the thin `rollout apply` client, thin-apply-client.ts): which server,
 * the result, and the errors. Imports only errors.ts, so the thin client
 * stays small.
 */
import { LazypullError, type LazypullErrorCode } from '../errors';

export const DEFAULT_SERVER = 'http://127.0.0.1:8450';

/** --server, else $LAZYPULL_SERVER, else the default; without trailing slashes (paths are appended). */
export function serverUrl(server: string | undefined): string {
  return (server ?? process.env.LAZYPULL_SERVER ?? DEFAULT_SERVER).replace(/\/+$/, '');
}

/** No answer at all; `reason` is the failure's code (ECONNREFUSED, ENOTFOUND, ...). */
export function unreachableError(server: string, reason: string): LazypullError {
  return new LazypullError(
    'LAZYPULL_ERR_INVALID_ARGUMENT',
    `cannot reach the controller at ${server} (${reason}); is \`lazypull controller\` running? (--server or LAZYPULL_SERVER)`,
    { server },
  );
}

/**
 * The JSON of an answer with a 2xx status; otherwise a LazypullError with the
 * server's message ({"error": {"code", "message", "field"?}}, http-api.ts).
 */
export function answerJson<T>(method: string, path: string, status: number, text: string): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (status < 200 || status > 299) {
    const e = (json as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
    const code: LazypullErrorCode = status === 400 ? 'LAZYPULL_ERR_INVALID_ARGUMENT' : e?.code?.startsWith('LAZYPULL_ERR_') ? (e.code as LazypullErrorCode) : 'LAZYPULL_ERR_INVALID_ARGUMENT';
    throw new LazypullError(code, e?.message ?? `${method} ${path}: HTTP ${status}`, { status, field: e?.field });
  }
  return json as T;
}
