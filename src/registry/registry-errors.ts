/**
 * Turning HTTP outcomes into LazypullErrors that name the reference, the
 * operation and the status, so a user can act without a debugger. Messages
 * are built only from facts the client chose (never headers or URLs with
 * query strings) plus the registry's own error code/message, redacted.
 */

import { STATUS_CODES } from 'node:http';
import { LazypullError, LazypullErrorCode, redact, toError } from '../errors';
import { formatReference, ImageReference } from './reference';

/** What is being done to what, for error messages and details. */
export interface Operation {
  /** e.g. "GET manifest", "PUT blob upload". */
  action: string;
  /** The image or blob the operation concerns. */
  target: ImageReference;
}

export function describeTarget(target: ImageReference): string {
  return formatReference(target);
}

function baseDetails(op: Operation): Record<string, string | number | undefined> {
  return {
    registry: op.target.registry,
    repository: op.target.repository,
    tag: op.target.tag,
    digest: op.target.digest,
    action: op.action,
  };
}

export function operationError(
  op: Operation,
  code: LazypullErrorCode,
  detail: string,
  extra: Record<string, string | number | undefined> = {},
  cause?: unknown,
): LazypullError {
  const message = `registry ${describeTarget(op.target)}: ${op.action} failed: ${detail}`;
  return new LazypullError(code, message, { ...baseDetails(op), ...extra }, cause === undefined ? undefined : { cause });
}

export function statusText(status: number): string {
  return `${status} ${STATUS_CODES[status] ?? 'Unknown Status'}`;
}

export function codeForStatus(status: number): LazypullErrorCode {
  if (status === 401 || status === 403) return 'LAZYPULL_ERR_REGISTRY_AUTH';
  if (status === 404) return 'LAZYPULL_ERR_REGISTRY_NOT_FOUND';
  return 'LAZYPULL_ERR_REGISTRY_STATUS';
}

/**
 * The registry's error body ({"errors":[{"code","message"}]}) summarised in
 * one short, redacted line; `detail` fields are skipped as they echo input.
 */
export function summarizeErrorBody(body: Buffer | undefined): string | undefined {
  if (body === undefined || body.length === 0) return undefined;
  try {
    const parsed = JSON.parse(body.subarray(0, 65536).toString('utf8')) as unknown;
    const errors = (parsed as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) return undefined;
    const parts = errors
      .slice(0, 3)
      .map((entry: unknown) => {
        const e = entry as { code?: unknown; message?: unknown };
        const code = typeof e.code === 'string' ? e.code : '';
        const message = typeof e.message === 'string' ? e.message : '';
        return [code, message].filter((s) => s.length > 0).join(': ');
      })
      .filter((s) => s.length > 0);
    if (parts.length === 0) return undefined;
    const text = redact(parts.join('; '));
    return text.length > 200 ? `${text.slice(0, 200)}...` : text;
  } catch {
    return undefined;
  }
}

/** The first registry error code in the body, e.g. "DIGEST_INVALID". */
export function registryErrorCode(body: Buffer | undefined): string | undefined {
  if (body === undefined || body.length === 0) return undefined;
  try {
    const parsed = JSON.parse(body.subarray(0, 65536).toString('utf8')) as { errors?: Array<{ code?: unknown }> };
    const code = parsed.errors?.[0]?.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

export function statusError(op: Operation, status: number, body?: Buffer, hint?: string): LazypullError {
  const summary = summarizeErrorBody(body);
  let detail = statusText(status);
  if (summary !== undefined) detail += ` (${summary})`;
  if (hint !== undefined) detail += `: ${hint}`;
  const code = registryErrorCode(body) === 'DIGEST_INVALID' ? 'LAZYPULL_ERR_DIGEST_MISMATCH' : codeForStatus(status);
  return operationError(op, code, detail, { status, registryCode: registryErrorCode(body) });
}

/**
 * A transport failure (refused, reset, timeout) as REGISTRY_NETWORK. The
 * cause is rebuilt from the original's code and redacted message so nothing
 * the network layer attached (request options, headers) travels with it.
 */
export function networkError(op: Operation, error: unknown, attempts: number, url?: URL): LazypullError {
  const err = toError(error);
  const code = (err as { code?: unknown }).code;
  const codeText = typeof code === 'string' ? code : undefined;
  const where = url === undefined ? '' : ` to ${url.protocol}//${url.host}`;
  const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
  // OpenSSL messages are long internal strings; the code says it better.
  let reason = codeText?.startsWith('ERR_SSL_') ? `TLS error ${codeText}` : redact((err.message || codeText || err.name).trim());
  if (codeText === 'ERR_SSL_WRONG_VERSION_NUMBER' && url?.protocol === 'https:') {
    reason += ' (the registry may speak plain HTTP: list it in plainHttp)';
  }
  const cause = new Error(reason);
  if (codeText !== undefined) (cause as Error & { code?: string }).code = codeText;
  return operationError(
    op,
    'LAZYPULL_ERR_REGISTRY_NETWORK',
    `connection${where} failed${tries}: ${reason}`,
    { attempts, errorCode: codeText },
    cause,
  );
}
