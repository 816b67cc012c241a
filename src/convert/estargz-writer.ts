/**
 * Writes an eStargz blob from tar entries given in their final order.
 *
 * Member layout: every chunk of regular-file data is a gzip member of its
 * own (the TOC `offset` points at it, and it holds nothing else); tar
 * headers and padding between chunks are gathered into small members of
 * their own. Then the TOC member (tar header, TOC JSON, end-of-archive) and
 * the footer. Gunzipped as one stream, the blob is the input tar with the
 * TOC and landmark entries added.
 */
import { createHash } from 'node:crypto';
import type { AtomicFile } from '../util/atomic-file';
import { tocEntryName } from '../format/entry-name';
import { buildFooter } from '../format/footer';
import { paddingFor, type TarHeader } from '../format/tar-reader';
import { END_OF_ARCHIVE, regularFileEntry, regularFileHeader } from '../format/tar-writer';
import { formatModtime, serializeToc, sha256Digest, TOC_TAR_NAME, type TocEntry } from '../format/toc';
import type { GzipPool } from './gzip-pool';
import { MemberQueue } from './member-queue';

/** One tar entry on its way into the blob. */
export interface LayerEntry {
  header: TarHeader;
  /** The entry's header blocks exactly as they were in the input. */
  raw: Buffer;
  /** Cleaned name (see cleanEntryName). */
  cleanName: string;
  /** Cleaned hardlink target, for hardlinks. */
  cleanLinkName?: string;
  /** Next piece (at most `max` bytes) of the file data, null when done. */
  readData(max: number): Promise<Buffer | null>;
}

export interface LayerResult {
  /** sha256 of the compressed blob. */
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar. */
  diffID: string;
  tocDigest: string;
  uncompressedSize: number;
}

export const DEFAULT_CHUNK_SIZE = 4 << 20;

export class EstargzWriter {
  private readonly queue: MemberQueue;
  private readonly diffHash = createHash('sha256');
  private uncompressedSize = 0;
  /** Headers and padding waiting for the next member boundary. */
  private meta: Buffer[] = [];
  private readonly entries: TocEntry[] = [];

  constructor(
    private readonly out: AtomicFile,
    private readonly pool: GzipPool,
    private readonly chunkSize: number = DEFAULT_CHUNK_SIZE,
    /** Called with the count of uncompressed file bytes consumed, for progress. */
    private readonly onData?: (bytes: number) => void,
  ) {
    this.queue = new MemberQueue(pool, out);
  }

  private addUncompressed(data: Buffer): void {
    this.diffHash.update(data);
    this.uncompressedSize += data.length;
  }

  private async flushMeta(): Promise<void> {
    if (this.meta.length === 0) return;
    const parts = this.meta;
    this.meta = [];
    await this.queue.push(parts);
  }

  async addEntry(entry: LayerEntry): Promise<void> {
    const h = entry.header;
    this.meta.push(entry.raw);
    this.addUncompressed(entry.raw);
    const toc = this.tocEntryFor(entry);
    if (h.type !== 'reg' || h.size === 0) {
      if (h.type === 'reg') toc.digest = sha256Digest(Buffer.alloc(0));
      this.entries.push(toc);
      return;
    }
    const fileHash = createHash('sha256');
    let chunkEntry = toc;
    for (let chunkOffset = 0; chunkOffset < h.size; chunkOffset += this.chunkSize) {
      const length = Math.min(this.chunkSize, h.size - chunkOffset);
      const parts = await this.readExactly(entry, length);
      const chunkHash = createHash('sha256');
      for (const part of parts) {
        chunkHash.update(part);
        fileHash.update(part);
        this.addUncompressed(part);
      }
      if (chunkOffset > 0) chunkEntry = { name: toc.name, type: 'chunk' };
      if (chunkOffset > 0) chunkEntry.chunkOffset = chunkOffset;
      // As the reference writes it: full-size chunks carry chunkSize, a shorter last chunk runs to the end of the file.
      if (length === this.chunkSize) chunkEntry.chunkSize = length;
      chunkEntry.chunkDigest = `sha256:${chunkHash.digest('hex')}`;
      this.entries.push(chunkEntry);
      await this.flushMeta();
      const target = chunkEntry;
      await this.queue.push(parts, (offset) => {
        target.offset = offset;
      });
      this.onData?.(length);
    }
    toc.digest = `sha256:${fileHash.digest('hex')}`;
    const padding = Buffer.alloc(paddingFor(h.size));
    if (padding.length > 0) {
      this.meta.push(padding);
      this.addUncompressed(padding);
    }
  }

  private async readExactly(entry: LayerEntry, length: number): Promise<Buffer[]> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < length) {
      const part = await entry.readData(length - got);
      if (part === null) throw new Error(`internal: entry "${entry.header.name}" ended ${length - got} bytes early`);
      parts.push(part);
      got += part.length;
    }
    return parts;
  }

  private tocEntryFor(entry: LayerEntry): TocEntry {
    const h = entry.header;
    const e: TocEntry = { name: tocEntryName(entry.cleanName, h.type === 'dir'), type: h.type };
    if (h.type === 'reg' && h.size > 0) e.size = h.size;
    const modtime = formatModtime(h.mtime);
    if (modtime) e.modtime = modtime;
    if (h.type === 'symlink') e.linkName = h.linkName;
    if (h.type === 'hardlink') e.linkName = entry.cleanLinkName ?? h.linkName;
    if (h.mode) e.mode = h.mode;
    if (h.uid) e.uid = h.uid;
    if (h.gid) e.gid = h.gid;
    if (h.uname) e.userName = h.uname;
    if (h.gname) e.groupName = h.gname;
    if (h.devMajor) e.devMajor = h.devMajor;
    if (h.devMinor) e.devMinor = h.devMinor;
    if (h.xattrs.size > 0) {
      e.xattrs = {};
      // Sorted by name, as the reference's JSON encoder writes maps.
      for (const k of [...h.xattrs.keys()].sort()) e.xattrs[k] = h.xattrs.get(k)!.toString('base64');
    }
    return e;
  }

  /** Add a file the converter makes itself (a landmark). */
  async addSyntheticFile(name: string, content: Buffer): Promise<void> {
    const header = regularFileHeader(name, content.length, 0);
    let served = false;
    await this.addEntry({
      header: { name, type: 'reg', mode: 0, uid: 0, gid: 0, size: content.length, mtime: 0, linkName: '', uname: '', gname: '', devMajor: 0, devMinor: 0, xattrs: new Map() },
      raw: header,
      cleanName: name,
      readData: async () => {
        if (served) return null;
        served = true;
        return content;
      },
    });
  }

  /** Write the TOC and footer; returns the blob's identity. The caller commits the file. */
  async finish(): Promise<LayerResult> {
    await this.flushMeta();
    await this.queue.flush();
    const tocJson = serializeToc({ version: 1, entries: this.entries });
    const tocMember = Buffer.concat([regularFileEntry(TOC_TAR_NAME, tocJson, 0), END_OF_ARCHIVE]);
    this.addUncompressed(tocMember);
    const tocOffset = this.out.position;
    const [compressed] = await this.pool.compress([tocMember]);
    await this.out.write(compressed);
    await this.out.write(buildFooter(tocOffset));
    return {
      digest: this.out.digest(),
      size: this.out.position,
      diffID: `sha256:${this.diffHash.digest('hex')}`,
      tocDigest: sha256Digest(tocJson),
      uncompressedSize: this.uncompressedSize,
    };
  }
}
