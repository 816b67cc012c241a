/**
 * The file tree of one eStargz layer, built from its TOC: inodes with the
 * exact attributes a filesystem must report, directories with their
 * children, hardlinks sharing one inode, and each regular file's chunks in
 * blob order. Overlay whiteouts are presented the way overlayfs expects
 * in a lower layer: `.wh.NAME` becomes a 0/0 character device `NAME`, and
 * a directory holding `.wh..wh..opq` gets `trusted.overlay.opaque=y`.
 * Pure: TOC in, tree out.
 */
import { LazypullError } from '../errors';
import { cleanEntryName, parentNames } from '../format/entry-name';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME, type Toc, type TocEntry } from '../format/toc';

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
export const OPAQUE_XATTR = 'trusted.overlay.opaque';

/** One piece of a regular file's data: a gzip member in the blob. */
export interface Chunk {
  /** Position of the chunk in the file. */
  fileOffset: number;
  size: number;
  /** Blob offset of the gzip member holding the chunk. */
  blobOffset: number;
  /** Where the next chunk-bearing member (or the TOC) starts: the end of the compressed range to fetch. */
  blobEnd: number;
  digest: string;
}

export interface Inode {
  ino: number;
  /** File type bits plus permission bits (with setuid/setgid/sticky). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  nlink: number;
  rdev: number;
  devMajor: number;
  devMinor: number;
  linkName?: string;
  /** Read-only: inodes without extended attributes share one empty map. */
  xattrs: ReadonlyMap<string, Buffer>;
  /** Regular files: chunks ordered by fileOffset. */
  chunks: Chunk[];
  /** sha256 of the whole file (regular files). */
  digest?: string;
  /** Directories: child name -> inode. */
  children?: Map<string, Inode>;
}

/** dev_t as Linux encodes it (glibc makedev), which FUSE passes through to the kernel. */
export function makedev(major: number, minor: number): number {
  return ((minor & 0xfff00) << 12) | ((major & 0xfff) << 8) | (minor & 0xff);
}

const TYPE_BITS: Record<string, number> = { dir: S_IFDIR, reg: S_IFREG, symlink: S_IFLNK, char: S_IFCHR, block: S_IFBLK, fifo: S_IFIFO };

function parseModtime(text: string | undefined): number {
  if (!text) return 0;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? 0 : Math.floor(ms / 1000);
}

/** parseModtime with a memo: files of one layer share few distinct times, and Date.parse is slow. */
function modtimeParser(): (text: string | undefined) => number {
  const seen = new Map<string, number>();
  return (text) => {
    if (!text) return 0;
    let seconds = seen.get(text);
    if (seconds === undefined) {
      seconds = parseModtime(text);
      seen.set(text, seconds);
    }
    return seconds;
  };
}

/** Shared by every inode without xattrs: a layer has thousands of inodes and seldom any xattr, and each Map costs memory and GC time at mount. */
const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();

function decodeXattrs(entry: TocEntry, where: () => string): ReadonlyMap<string, Buffer> {
  if (entry.xattrs === undefined) return NO_XATTRS;
  const out = new Map<string, Buffer>();
  for (const [name, value] of Object.entries(entry.xattrs)) {
    if (typeof value !== 'string') throw indexError(`${where()}: xattr ${name} is not base64 text`);
    out.set(name, Buffer.from(value, 'base64'));
  }
  return out;
}

function indexError(message: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_TOC_INVALID', message);
}

export interface LayerIndexOptions {
  /** Blob offset of the TOC member: the end of the last chunk's compressed range. */
  tocOffset: number;
  /** Label for errors (layer digest). */
  label: string;
}

export class LayerIndex {
  readonly root: Inode;
  /** All inodes by number; 1 is the root. */
  readonly inodes = new Map<number, Inode>();
  /** Blob offset of `.prefetch.landmark`, when the layer has a prioritized set. */
  readonly prefetchEnd: number | undefined;
  /** Total bytes of regular-file data (each hardlinked file once). */
  readonly dataSize: number;
  /**
   * Paths ("/usr/bin/python3") of the entries before `.prefetch.landmark`,
   * in TOC order: the files the image's author listed as read at start-up.
   * Empty when the layer has no landmark.
   */
  readonly prioritized: string[];
  /**
   * Whether any inode has an extended attribute (the opaque marker
   * included). A layer without any can tell the kernel once that it has no
   * xattrs at all instead of answering every getxattr.
   */
  readonly hasXattrs: boolean;
  private nextIno = 1;

  constructor(toc: Toc, opts: LayerIndexOptions) {
    this.root = this.newInode(S_IFDIR | 0o755);
    this.root.children = new Map();
    const { label } = opts;

    // Blob order of chunk-bearing members gives each chunk the end of its compressed range.
    const offsets = [...new Set(toc.entries.filter((e) => e.offset).map((e) => e.offset as number))].sort((a, b) => a - b);
    const nextOffset = (offset: number): number => {
      let lo = 0;
      let hi = offsets.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (offsets[mid] <= offset) lo = mid + 1;
        else hi = mid;
      }
      return lo < offsets.length ? offsets[lo] : opts.tocOffset;
    };

    const byName = new Map<string, Inode>([['', this.root]]);
    const hardlinks: Array<{ name: string; target: string }> = [];
    const opaqueDirs: string[] = [];
    let prefetchEnd: number | undefined;
    let dataSize = 0;
    const prioritized: string[] = [];
    let beforeLandmark = true;

    const modtime = modtimeParser();
    for (let index = 0; index < toc.entries.length; index++) {
      const entry = toc.entries[index]!;
      // Described only for an error: a TOC has thousands of valid entries.
      const where = (): string => `${label}: TOC entry ${index} "${entry.name}"`;
      const name = cleanEntryName(entry.name);
      if (name === null) throw indexError(`${where()}: path escapes the layer root`);
      if (name === PREFETCH_LANDMARK) {
        prefetchEnd = entry.offset;
        beforeLandmark = false;
      }
      if (name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK || name === TOC_TAR_NAME) continue;
      // Whiteouts and opaque markers are not files a container opens.
      if (beforeLandmark && entry.type !== 'chunk' && !name.slice(name.lastIndexOf('/') + 1).startsWith(WHITEOUT_PREFIX)) prioritized.push(`/${name}`);

      if (entry.type === 'chunk') {
        const file = byName.get(name);
        if (!file || (file.mode & S_IFMT) !== S_IFREG) throw indexError(`${where()}: chunk of an unknown file`);
        this.addChunk(file, entry, nextOffset, where);
        continue;
      }
      if (entry.type === 'hardlink') {
        const target = cleanEntryName(entry.linkName ?? '');
        if (target === null || target === '') throw indexError(`${where()}: bad hardlink target`);
        hardlinks.push({ name, target });
        continue;
      }
      if (name === '') {
        // The root's own attributes.
        if (entry.type !== 'dir') throw indexError(`${where()}: the root must be a directory`);
        this.applyAttributes(this.root, entry, modtime, where);
        continue;
      }
      const base = name.slice(name.lastIndexOf('/') + 1);
      const parentName = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
      if (base === OPAQUE_MARKER) {
        opaqueDirs.push(parentName);
        this.ensureDirs(byName, parentName);
        continue;
      }
      let node: Inode;
      const existing = byName.get(name);
      if (existing && existing.children && entry.type === 'dir') {
        // A directory first made implicitly by a child that came earlier.
        node = existing;
      } else if (existing) {
        throw indexError(`${where()}: duplicate entry`);
      } else {
        const typeBits = TYPE_BITS[entry.type];
        if (typeBits === undefined) throw indexError(`${where()}: unknown type "${entry.type}"`);
        node = this.newInode(typeBits);
        if (entry.type === 'dir') node.children = new Map();
      }
      this.applyAttributes(node, entry, modtime, where);
      let displayName = base;
      if (base.startsWith(WHITEOUT_PREFIX) && base.length > WHITEOUT_PREFIX.length) {
        // overlayfs sees a deleted lower file as a 0/0 character device with the file's name.
        displayName = base.slice(WHITEOUT_PREFIX.length);
        node.mode = S_IFCHR | (node.mode & 0o7777);
        node.rdev = 0;
        node.devMajor = 0;
        node.devMinor = 0;
        node.size = 0;
      }
      if (entry.type === 'reg') {
        node.size = entry.size ?? 0;
        node.digest = entry.digest;
        dataSize += node.size;
        if (entry.offset) this.addChunk(node, entry, nextOffset, where);
      }
      if (entry.type === 'symlink') node.linkName = entry.linkName ?? '';
      if (entry.type === 'char' || entry.type === 'block') node.rdev = makedev(node.devMajor, node.devMinor);
      byName.set(name, node);
      const parent = this.ensureDirs(byName, parentName);
      if (parent.children!.has(displayName) && parent.children!.get(displayName) !== node) {
        throw indexError(`${where()}: "${displayName}" appears twice in its directory`);
      }
      parent.children!.set(displayName, node);
      if (entry.type === 'dir') parent.nlink++;
    }

    for (const { name, target } of hardlinks) {
      const node = byName.get(target);
      if (!node) throw indexError(`${label}: hardlink "${name}" points at missing "${target}"`);
      if (node.children) throw indexError(`${label}: hardlink "${name}" points at a directory`);
      const parentName = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
      const parent = this.ensureDirs(byName, parentName);
      parent.children!.set(name.slice(name.lastIndexOf('/') + 1), node);
      node.nlink++;
      byName.set(name, node);
    }
    for (const dir of opaqueDirs) {
      const node = byName.get(dir);
      if (node?.children) node.xattrs = new Map(node.xattrs).set(OPAQUE_XATTR, Buffer.from('y'));
    }
    for (const node of this.inodes.values()) {
      if (node.chunks.length > 1) node.chunks.sort((a, b) => a.fileOffset - b.fileOffset);
      this.checkChunks(node, label);
    }
    this.prefetchEnd = prefetchEnd;
    this.dataSize = dataSize;
    this.prioritized = prefetchEnd === undefined ? [] : [...new Set(prioritized)];
    let hasXattrs = false;
    for (const node of this.inodes.values()) if (node.xattrs.size > 0) hasXattrs = true;
    this.hasXattrs = hasXattrs;
  }

  private newInode(mode: number): Inode {
    const node: Inode = {
      ino: this.nextIno++, mode, uid: 0, gid: 0, size: 0, mtime: 0, nlink: 1, rdev: 0, devMajor: 0, devMinor: 0,
      xattrs: NO_XATTRS, chunks: [],
    };
    if ((mode & S_IFMT) === S_IFDIR) node.nlink = 2;
    this.inodes.set(node.ino, node);
    return node;
  }

  private applyAttributes(node: Inode, entry: TocEntry, modtime: (text: string | undefined) => number, where: () => string): void {
    node.mode = (node.mode & S_IFMT) | ((entry.mode ?? 0) & 0o7777);
    node.uid = entry.uid ?? 0;
    node.gid = entry.gid ?? 0;
    node.mtime = modtime(entry.modtime);
    node.devMajor = entry.devMajor ?? 0;
    node.devMinor = entry.devMinor ?? 0;
    node.xattrs = decodeXattrs(entry, where);
  }

  /** The directory `name`, creating missing ancestors as plain 0755 directories. */
  private ensureDirs(byName: Map<string, Inode>, name: string): Inode {
    const existing = byName.get(name);
    if (existing) {
      if (!existing.children) throw indexError(`"${name}" is used as a directory but is not one`);
      return existing;
    }
    let parent = this.root;
    for (const dirName of [...parentNames(name), name]) {
      let dir = byName.get(dirName);
      if (!dir) {
        dir = this.newInode(S_IFDIR | 0o755);
        dir.children = new Map();
        byName.set(dirName, dir);
        parent.children!.set(dirName.slice(dirName.lastIndexOf('/') + 1), dir);
        parent.nlink++;
      }
      if (!dir.children) throw indexError(`"${dirName}" is used as a directory but is not one`);
      parent = dir;
    }
    return parent;
  }

  private addChunk(file: Inode, entry: TocEntry, nextOffset: (o: number) => number, where: () => string): void {
    if (!entry.offset || !entry.chunkDigest && !entry.digest) throw indexError(`${where()}: chunk without offset or digest`);
    const fileOffset = entry.chunkOffset ?? 0;
    const size = entry.chunkSize || file.size - fileOffset;
    file.chunks.push({
      fileOffset,
      size,
      blobOffset: entry.offset,
      blobEnd: nextOffset(entry.offset),
      // Old stargz writers set only `digest` on single-chunk files.
      digest: (entry.chunkDigest ?? entry.digest) as string,
    });
  }

  /** Chunks must tile the file exactly: no gap, no overlap, inside the file. */
  private checkChunks(node: Inode, label: string): void {
    if ((node.mode & S_IFMT) !== S_IFREG) return;
    let expected = 0;
    for (const c of node.chunks) {
      if (c.fileOffset !== expected || c.size <= 0 || c.blobEnd <= c.blobOffset) {
        throw indexError(`${label}: chunks of a ${node.size}-byte file do not tile it (at ${c.fileOffset})`);
      }
      expected += c.size;
    }
    if (expected !== node.size) throw indexError(`${label}: chunks cover ${expected} of ${node.size} bytes`);
  }

  /** Inode at a path like "/a/b" (or "a/b"), or undefined. */
  lookup(path: string): Inode | undefined {
    let node: Inode | undefined = this.root;
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      node = node?.children?.get(part);
      if (!node) return undefined;
    }
    return node;
  }
}
