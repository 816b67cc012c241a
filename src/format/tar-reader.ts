/**
 * Streaming tar reader that keeps every entry's raw header blocks.
 *
 * Why not just tar-stream's extractor: a converter must re-emit each entry
 * exactly as it came (PAX records, GNU long names, numeric encodings), and it
 * needs PAX uid/gid/mtime/uname/xattr records that tar-stream does not apply.
 * Keeping the raw header bytes makes the eStargz output an exact copy of the
 * input tar, entry for entry.
 */
import { ByteReader, type ByteSource } from './byte-reader';
import { LazypullError } from '../errors';

export const BLOCK_SIZE = 512;

export type TarEntryType = 'reg' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** Path as written in the archive, after PAX/GNU long-name records. */
  name: string;
  type: TarEntryType;
  /** Permission bits plus setuid/setgid/sticky (no file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of file data that follow the header (regular files only). */
  size: number;
  /** Modification time in seconds since the epoch (may be fractional from PAX). */
  mtime: number;
  linkName: string;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  /** Extended attributes from `SCHILY.xattr.*` / `LIBARCHIVE.xattr.*` PAX records. */
  xattrs: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /** All header blocks of the entry (PAX / GNU long-name blocks included), verbatim. */
  raw: Buffer;
  /** Offset of `raw` in the uncompressed input tar. */
  headerOffset: number;
  /** Offset of the entry's data in the uncompressed input tar. */
  dataOffset: number;
}

const TYPE_BY_FLAG: Record<string, TarEntryType> = {
  '0': 'reg', '\0': 'reg', '7': 'reg',
  '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo',
};

/** Size of the padding that follows `size` bytes of data. */
export function paddingFor(size: number): number {
  const rem = size % BLOCK_SIZE;
  return rem === 0 ? 0 : BLOCK_SIZE - rem;
}

function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const nul = field.indexOf(0);
  return (nul === -1 ? field : field.subarray(0, nul)).toString('utf8');
}

/** Octal or GNU base-256 numeric field. */
function parseNumber(buf: Buffer, start: number, length: number, field: string, entry: string): number {
  const bytes = buf.subarray(start, start + length);
  if (bytes[0] & 0x80) {
    if (bytes[0] === 0xff) throw tarError(`negative ${field} in header`, entry);
    let value = bytes[0] & 0x7f;
    for (let i = 1; i < bytes.length; i++) value = value * 256 + bytes[i];
    if (!Number.isSafeInteger(value)) throw tarError(`${field} too large`, entry);
    return value;
  }
  const text = bytes.toString('latin1').replace(/[\0 ]+$/g, '').replace(/^[\0 ]+/g, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw tarError(`invalid ${field} field "${text}"`, entry);
  return parseInt(text, 8);
}

function tarError(message: string, entry?: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_TAR_INVALID', entry ? `${message} (entry "${entry}")` : message, { entry });
}

function checksumMatches(block: Buffer): boolean {
  const stored = block.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/g, '').trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  const expected = parseInt(stored, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return expected === unsigned || expected === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

/** PAX extended header records: "LEN key=value\n". Values stay as bytes (xattrs may be binary). */
export function parsePaxRecords(data: Buffer, entry: string): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw tarError('malformed PAX record', entry);
    const len = parseInt(data.subarray(pos, space).toString('latin1'), 10);
    if (!Number.isInteger(len) || len <= 0 || pos + len > data.length) throw tarError('malformed PAX record length', entry);
    const record = data.subarray(space + 1, pos + len - 1); // drop trailing "\n"
    const eq = record.indexOf(0x3d);
    if (eq === -1) throw tarError('PAX record without "="', entry);
    records.set(record.subarray(0, eq).toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    pos += len;
  }
  return records;
}

function applyPax(header: TarHeader, pax: Map<string, Buffer>): void {
  for (const [key, value] of pax) {
    const text = value.toString('utf8');
    switch (key) {
      case 'path': header.name = text; break;
      case 'linkpath': header.linkName = text; break;
      case 'size': header.size = Number(text); break;
      case 'uid': header.uid = Number(text); break;
      case 'gid': header.gid = Number(text); break;
      case 'uname': header.uname = text; break;
      case 'gname': header.gname = text; break;
      case 'mtime': header.mtime = Number(text); break;
      case 'SCHILY.devmajor': header.devMajor = Number(text); break;
      case 'SCHILY.devminor': header.devMinor = Number(text); break;
      default:
        if (key.startsWith('SCHILY.xattr.')) {
          header.xattrs.set(key.slice('SCHILY.xattr.'.length), value);
        } else if (key.startsWith('LIBARCHIVE.xattr.')) {
          header.xattrs.set(decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(text, 'base64'));
        }
    }
  }
}

/**
 * Reads entries one by one. Call `next()` for the next entry, then read its
 * data with `readData()` (or don't: `next()` skips what was not read).
 */
export class TarReader {
  private readonly input: ByteReader;
  private dataLeft = 0;
  private padLeft = 0;
  private currentName = '';
  private globalPax = new Map<string, Buffer>();
  private finished = false;

  constructor(source: ByteSource) {
    this.input = new ByteReader(source);
  }

  get position(): number {
    return this.input.position;
  }

  async next(): Promise<TarEntry | null> {
    if (this.finished) return null;
    await this.skipRest();
    const rawBlocks: Buffer[] = [];
    const headerOffset = this.input.position;
    let pax = new Map<string, Buffer>(this.globalPax);
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const block = await this.input.readExact(BLOCK_SIZE);
      if (block.length === 0 && rawBlocks.length === 0) {
        // A tar that simply ends without end-of-archive blocks is accepted, as GNU tar does.
        this.finished = true;
        return null;
      }
      if (block.length < BLOCK_SIZE) throw tarError(`truncated tar: header cut short at byte ${this.input.position}`, this.currentName || undefined);
      if (isZeroBlock(block)) {
        if (rawBlocks.length > 0) throw tarError('end-of-archive marker inside an entry header', this.currentName);
        this.finished = true;
        return null;
      }
      if (!checksumMatches(block)) {
        throw tarError(`not a tar archive: bad header checksum at byte ${this.input.position - BLOCK_SIZE}`, this.currentName || undefined);
      }
      rawBlocks.push(block);
      const flag = String.fromCharCode(block[156]);
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        const size = parseNumber(block, 124, 12, 'size', this.currentName);
        const padded = size + paddingFor(size);
        const body = await this.input.readExact(padded);
        if (body.length < padded) throw tarError('truncated tar: extended header cut short', this.currentName || undefined);
        rawBlocks.push(body);
        const data = body.subarray(0, size);
        if (flag === 'x') for (const [k, v] of parsePaxRecords(data, this.currentName)) pax.set(k, v);
        else if (flag === 'g') {
          for (const [k, v] of parsePaxRecords(data, this.currentName)) this.globalPax.set(k, v);
          pax = new Map([...this.globalPax, ...pax]);
        } else if (flag === 'L') longName = cString(data, 0, data.length);
        else longLink = cString(data, 0, data.length);
        continue;
      }
      const header = this.decodeHeader(block, flag);
      if (longName !== undefined) header.name = longName;
      if (longLink !== undefined) header.linkName = longLink;
      applyPax(header, pax);
      if (header.type !== 'reg') header.size = 0;
      if (!Number.isSafeInteger(header.size) || header.size < 0) throw tarError('invalid size', header.name);
      this.currentName = header.name;
      this.dataLeft = header.size;
      this.padLeft = paddingFor(header.size);
      const raw = rawBlocks.length === 1 ? rawBlocks[0] : Buffer.concat(rawBlocks);
      return { header, raw, headerOffset, dataOffset: this.input.position };
    }
  }

  private decodeHeader(block: Buffer, flag: string): TarHeader {
    let name = cString(block, 0, 100);
    const magic = block.subarray(257, 263).toString('latin1');
    if (magic === 'ustar\0' && block[345] !== 0) name = `${cString(block, 345, 155)}/${name}`;
    let type = TYPE_BY_FLAG[flag];
    if (type === undefined) {
      throw new LazypullError('LAZYPULL_ERR_TAR_UNSUPPORTED', `unsupported tar entry type "${flag}" (entry "${name}")`, { entry: name });
    }
    // Pre-POSIX archives mark directories only by a trailing slash.
    if (type === 'reg' && flag !== '7' && name.endsWith('/')) type = 'dir';
    return {
      name,
      type,
      mode: parseNumber(block, 100, 8, 'mode', name) & 0o7777,
      uid: parseNumber(block, 108, 8, 'uid', name),
      gid: parseNumber(block, 116, 8, 'gid', name),
      size: parseNumber(block, 124, 12, 'size', name),
      mtime: parseNumber(block, 136, 12, 'mtime', name),
      linkName: cString(block, 157, 100),
      uname: cString(block, 265, 32),
      gname: cString(block, 297, 32),
      devMajor: type === 'char' || type === 'block' ? parseNumber(block, 329, 8, 'devmajor', name) : 0,
      devMinor: type === 'char' || type === 'block' ? parseNumber(block, 337, 8, 'devminor', name) : 0,
      xattrs: new Map(),
    };
  }

  /** The next piece (at most `max` bytes) of the current entry's data, or null when it is done. */
  async readData(max: number): Promise<Buffer | null> {
    if (this.dataLeft === 0) return null;
    const part = await this.input.read(Math.min(max, this.dataLeft));
    if (part === null) throw tarError(`truncated tar: data ends ${this.dataLeft} bytes early`, this.currentName);
    this.dataLeft -= part.length;
    return part;
  }

  /** Read exactly `n` bytes of the current entry's data. */
  async readDataExact(n: number): Promise<Buffer> {
    const want = Math.min(n, this.dataLeft);
    const buf = await this.input.readExact(want);
    this.dataLeft -= buf.length;
    if (buf.length < want) throw tarError(`truncated tar: data ends ${this.dataLeft + want - buf.length} bytes early`, this.currentName);
    return buf;
  }

  private async skipRest(): Promise<void> {
    const want = this.dataLeft + this.padLeft;
    if (want === 0) return;
    const skipped = await this.input.skip(want);
    if (skipped < this.dataLeft) throw tarError('truncated tar: data cut short', this.currentName);
    // A missing final padding block is tolerated, as GNU tar does.
    this.dataLeft = 0;
    this.padLeft = 0;
  }

  async close(): Promise<void> {
    await this.input.close();
  }
}
