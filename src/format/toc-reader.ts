/**
 * Locate and read the TOC of an eStargz blob through a `readAt` interface,
 * so the same code serves a local file and a registry blob read by ranges.
 */
import { gunzipSync } from 'node:zlib';
import { LazypullError } from '../errors';
import { FOOTER_SIZE, requireFooter } from './footer';
import { parseToc, sha256Digest, TOC_TAR_NAME, DEFAULT_TOC_LIMITS, type Toc, type TocLimits } from './toc';
import { TarReader } from './tar-reader';

/** Random access to a blob's bytes. */
export interface BlobReader {
  readonly size: number;
  readAt(offset: number, length: number): Promise<Buffer>;
}

export interface BlobToc {
  toc: Toc;
  /** The TOC JSON exactly as stored; its sha256 is the TOC digest. */
  json: Buffer;
  tocDigest: string;
  tocOffset: number;
  footerSize: number;
}

/**
 * `tail`, when given, is the blob's last bytes, already read (a reader
 * fetches a generous tail in one request so that footer and TOC usually
 * need no second one). Otherwise the footer is read first, then the TOC.
 */
export async function readBlobToc(blob: BlobReader, label: string, limits: TocLimits = DEFAULT_TOC_LIMITS, tail?: Buffer): Promise<BlobToc> {
  if (tail !== undefined && tail.length > blob.size) throw new Error(`internal: a ${tail.length}-byte tail of a ${blob.size}-byte blob`);
  const known = tail ?? (await blob.readAt(blob.size - Math.min(blob.size, FOOTER_SIZE), Math.min(blob.size, FOOTER_SIZE)));
  const { tocOffset, footerSize } = requireFooter(known.subarray(Math.max(0, known.length - FOOTER_SIZE)), label);
  const tocEnd = blob.size - footerSize;
  if (tocOffset >= tocEnd) {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: footer points at offset ${tocOffset}, past the TOC area`, { blob: label });
  }
  if (tocEnd - tocOffset > limits.maxBytes) {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: compressed TOC is ${tocEnd - tocOffset} bytes, over the limit`, { blob: label });
  }
  const knownFrom = blob.size - known.length;
  const compressed = tocOffset >= knownFrom ? known.subarray(tocOffset - knownFrom, tocEnd - knownFrom) : await blob.readAt(tocOffset, tocEnd - tocOffset);
  let tar: Buffer;
  try {
    tar = gunzipSync(compressed, { maxOutputLength: limits.maxBytes + 64 * 1024 });
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: TOC member does not decompress (${(err as Error).message})`, { blob: label }, { cause: err });
  }
  const reader = new TarReader([tar]);
  const entry = await reader.next().catch((err: Error) => {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: TOC member is not a tar entry (${err.message})`, { blob: label });
  });
  if (!entry || entry.header.name !== TOC_TAR_NAME) {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: TOC member does not hold ${TOC_TAR_NAME}`, { blob: label });
  }
  const json = await reader.readDataExact(entry.header.size).catch(() => {
    throw new LazypullError('LAZYPULL_ERR_TOC_INVALID', `${label}: TOC entry is truncated`, { blob: label });
  });
  let toc: Toc;
  try {
    toc = parseToc(json, limits);
  } catch (err) {
    const e = err as LazypullError;
    throw new LazypullError(e.code ?? 'LAZYPULL_ERR_TOC_INVALID', `${label}: ${e.message}`, { blob: label }, { cause: err });
  }
  return { toc, json, tocDigest: sha256Digest(json), tocOffset, footerSize };
}
