/**
 * Content digests ("sha256:hex") for manifests and blobs: computing them,
 * and a pass-through stream that fails at the end if the bytes it carried
 * do not match, so a corrupted or truncated blob never looks complete.
 */

import { createHash, Hash } from 'node:crypto';
import { Transform, TransformCallback } from 'node:stream';
import { LazypullError } from '../errors';

const SUPPORTED = new Set(['sha256', 'sha512']);

export function digestAlgorithm(digest: string): string {
  const algorithm = digest.slice(0, digest.indexOf(':'));
  if (!SUPPORTED.has(algorithm)) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `unsupported digest algorithm in "${digest}"`, { digest });
  }
  return algorithm;
}

export function computeDigest(data: Buffer, algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

export class DigestVerifier extends Transform {
  private readonly hash: Hash;
  private readonly algorithm: string;
  private bytes = 0;

  /** `describe` names the blob in the error ("registry host/repo@sha256:..."). */
  constructor(
    private readonly expected: string,
    private readonly expectedSize: number | undefined,
    private readonly describe: string,
  ) {
    super();
    this.algorithm = digestAlgorithm(expected);
    this.hash = createHash(this.algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const actual = `${this.algorithm}:${this.hash.digest('hex')}`;
    if (this.expectedSize !== undefined && this.bytes !== this.expectedSize) {
      callback(
        new LazypullError(
          'LAZYPULL_ERR_DIGEST_MISMATCH',
          `${this.describe}: received ${this.bytes} bytes, expected ${this.expectedSize}`,
          { digest: this.expected, size: this.bytes, expectedSize: this.expectedSize },
        ),
      );
      return;
    }
    if (actual !== this.expected) {
      callback(
        new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `${this.describe}: content has digest ${actual}, expected ${this.expected}`, {
          digest: this.expected,
          actual,
          size: this.bytes,
        }),
      );
      return;
    }
    callback();
  }
}
