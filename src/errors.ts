/**
 * One error hierarchy for the whole project, after undici's `UND_ERR_*`:
 * callers branch on `code`, never on the message. Every error carries the
 * facts needed to act on it (layer, entry, reference, status) and never a
 * secret: constructors take no credentials, and `redact` scrubs any text
 * that came from outside before it is put into a message.
 */

export type LazypullErrorCode =
  | 'LAZYPULL_ERR_INVALID_ARGUMENT'
  | 'LAZYPULL_ERR_GZIP_CORRUPT'
  | 'LAZYPULL_ERR_GZIP_TRUNCATED'
  | 'LAZYPULL_ERR_TAR_INVALID'
  | 'LAZYPULL_ERR_TAR_UNSUPPORTED'
  | 'LAZYPULL_ERR_PATH_ESCAPE'
  | 'LAZYPULL_ERR_DUPLICATE_ENTRY'
  | 'LAZYPULL_ERR_NOT_ESTARGZ'
  | 'LAZYPULL_ERR_TOC_INVALID'
  | 'LAZYPULL_ERR_DIGEST_MISMATCH'
  | 'LAZYPULL_ERR_REFERENCE_INVALID'
  | 'LAZYPULL_ERR_REGISTRY_AUTH'
  | 'LAZYPULL_ERR_REGISTRY_NOT_FOUND'
  | 'LAZYPULL_ERR_REGISTRY_STATUS'
  | 'LAZYPULL_ERR_REGISTRY_NETWORK'
  | 'LAZYPULL_ERR_MANIFEST_UNSUPPORTED'
  | 'LAZYPULL_ERR_IMAGE_LAYOUT'
  /** A binary, package or privilege the command needs is missing on this machine. */
  | 'LAZYPULL_ERR_PREREQUISITE_MISSING'
  /** A private loopback daemon (registry, containerd) or a command run against it failed. */
  | 'LAZYPULL_ERR_SANDBOX'
  /** A lazy read of layer data could not complete (network fault, timeout); a filesystem answers EIO. */
  | 'LAZYPULL_ERR_READ_FAILED'
  /** A CRI call (kubelet's runtime API) failed; `details.grpcStatus` names the gRPC status (NOT_FOUND, DEADLINE_EXCEEDED, ...). */
  | 'LAZYPULL_ERR_CRI';

export class LazypullError extends Error {
  readonly code: LazypullErrorCode;
  /** Structured facts for logs; never holds credentials. */
  readonly details: Record<string, string | number | undefined>;

  constructor(
    code: LazypullErrorCode,
    message: string,
    details: Record<string, string | number | undefined> = {},
    options?: { cause?: unknown },
  ) {
    super(redact(message), options);
    this.name = 'LazypullError';
    this.code = code;
    this.details = details;
  }
}

/** Narrow an unknown thrown value to an Error, in one place. */
export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

export function isLazypullError(value: unknown, code?: LazypullErrorCode): value is LazypullError {
  return value instanceof LazypullError && (code === undefined || value.code === code);
}

/**
 * Remove things that look like credentials from text that may have come
 * from a server or a URL: userinfo in URLs, Authorization headers, bearer
 * tokens and `password=`/`token=` style parameters.
 */
export function redact(text: string): string {
  return text
    .replace(/(\w+:\/\/)[^/@\s:]+:[^/@\s]*@/g, '$1***:***@')
    .replace(/(authorization\s*[:=]\s*)(basic|bearer)?\s*[^\s,;"']+/gi, '$1$2 ***')
    .replace(/(bearer\s+)[A-Za-z0-9._~+/=-]{8,}/gi, '$1***')
    .replace(/((?:password|passwd|token|access_token|refresh_token|secret)["']?\s*[:=]\s*["']?)[^\s&"',;]+/gi, '$1***');
}
