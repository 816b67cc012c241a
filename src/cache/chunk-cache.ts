/**
 * The seam between the layer reader and chunk storage. Chunks are keyed by
 * the sha256 of their uncompressed bytes (the TOC's `chunkDigest`), so the
 * same chunk in two layers or two images is stored once.
 *
 * Contract: `put` is given bytes the caller has already verified against
 * the digest; `get` returns only bytes that match it (a store that can be
 * damaged outside the process, like a disk, re-verifies and drops a bad
 * entry instead of serving it).
 */
import { createHash } from 'node:crypto';
import { LazypullError } from '../errors';

export interface ChunkCache {
  /** Verified bytes, or undefined when absent (or found damaged and dropped). */
  get(digest: string): Promise<Buffer | undefined>;
  put(digest: string, data: Buffer): Promise<void>;
  /** Cheap and synchronous: answered from an in-memory index. */
  has(digest: string): boolean;
}

const SHA256_DIGEST = /^sha256:([0-9a-f]{64})$/;

/** The 64 hex digits of a `sha256:<hex>` digest; anything else is refused. */
export function digestHex(digest: string): string {
  const m = SHA256_DIGEST.exec(digest);
  if (m === null) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `chunk digest "${digest.slice(0, 80)}" is not sha256:<64 hex digits>`);
  }
  return m[1]!;
}

/** `sha256:<hex>` of the bytes. */
export function chunkDigestOf(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
