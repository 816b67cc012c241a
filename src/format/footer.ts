/**
 * The eStargz footer: an empty gzip member whose header "extra" field holds
 * the offset of the TOC member. pako builds and parses it because node:zlib
 * can neither write nor expose gzip header extra fields.
 */
import pako from 'pako';
import { LazypullError } from '../errors';

/** Current eStargz footer: extra field = subfield "SG", length 22, payload. */
export const FOOTER_SIZE = 51;
/** Legacy stargz footer: the 22-byte payload is the whole extra field. */
export const LEGACY_FOOTER_SIZE = 47;

const MAGIC = 'STARGZ';

function payload(tocOffset: number): Buffer {
  return Buffer.from(`${tocOffset.toString(16).padStart(16, '0')}${MAGIC}`, 'latin1');
}

export function buildFooter(tocOffset: number): Buffer {
  const body = payload(tocOffset);
  const extra = Buffer.alloc(4 + body.length);
  extra.write('SG', 0, 'latin1');
  extra.writeUInt16LE(body.length, 2);
  body.copy(extra, 4);
  // Level 0 makes an empty stored block, which keeps the member at exactly 51 bytes.
  // (@types/pako omits the documented `header` option.)
  const options = { level: 0, header: { extra: Array.from(extra), os: 255 } } as pako.DeflateFunctionOptions;
  const out = Buffer.from(pako.gzip(new Uint8Array(0), options));
  if (out.length !== FOOTER_SIZE) throw new Error(`internal: footer is ${out.length} bytes, not ${FOOTER_SIZE}`);
  return out;
}

export interface ParsedFooter {
  tocOffset: number;
  footerSize: number;
}

function gzipExtra(member: Buffer): Buffer | undefined {
  try {
    const inflator = new pako.Inflate();
    inflator.push(member, true);
    if (inflator.err) return undefined;
    const extra = (inflator as unknown as { header?: { extra?: ArrayLike<number> } }).header?.extra;
    return extra ? Buffer.from(extra as Uint8Array) : undefined;
  } catch {
    return undefined;
  }
}

function parseOffset(text: string): number | undefined {
  if (!/^[0-9a-f]{16}$/i.test(text)) return undefined;
  const value = parseInt(text, 16);
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * Find the TOC offset from the tail of a blob (pass at least the last 51
 * bytes). Accepts the eStargz and the legacy form; returns undefined when
 * the tail is neither.
 */
export function parseFooter(tail: Buffer): ParsedFooter | undefined {
  if (tail.length >= FOOTER_SIZE) {
    const extra = gzipExtra(tail.subarray(tail.length - FOOTER_SIZE));
    if (extra && extra.length === 26 && extra.toString('latin1', 0, 2) === 'SG' && extra.readUInt16LE(2) === 22 &&
        extra.toString('latin1', 20) === MAGIC) {
      const tocOffset = parseOffset(extra.toString('latin1', 4, 20));
      if (tocOffset !== undefined) return { tocOffset, footerSize: FOOTER_SIZE };
    }
  }
  if (tail.length >= LEGACY_FOOTER_SIZE) {
    const extra = gzipExtra(tail.subarray(tail.length - LEGACY_FOOTER_SIZE));
    if (extra && extra.length === 22 && extra.toString('latin1', 16) === MAGIC) {
      const tocOffset = parseOffset(extra.toString('latin1', 0, 16));
      if (tocOffset !== undefined) return { tocOffset, footerSize: LEGACY_FOOTER_SIZE };
    }
  }
  return undefined;
}

/** Like parseFooter, but throws LAZYPULL_ERR_NOT_ESTARGZ naming the blob. */
export function requireFooter(tail: Buffer, blob: string): ParsedFooter {
  const footer = parseFooter(tail);
  if (!footer) {
    throw new LazypullError('LAZYPULL_ERR_NOT_ESTARGZ', `${blob}: not an eStargz blob (no eStargz or stargz footer found)`, { blob });
  }
  return footer;
}
