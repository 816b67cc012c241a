/**
 * The FUSE operations of one read-only eStargz layer: metadata straight from
 * the LayerIndex, file bytes through a reader (the LayerReader: verified
 * chunks, cache, Range GETs). A read either answers the exact bytes or
 * EIO, within `readTimeoutMs`; everything that would modify answers EROFS.
 *
 * fuse-native calls these on the Node event loop, so nothing here may block
 * on the mount itself.
 */
import { Errno, type FuseOperations, type FuseStat } from './fuse-native';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Inode, type LayerIndex } from './layer-index';
import { startupPaths } from './startup-files';

/** The one thing the operations need from the data path (LayerReader satisfies it). */
export interface InodeReader {
  read(inode: Inode, offset: number, length: number, path?: string): Promise<Buffer>;
  /** Resolves once the layer's start-up files are cached or being fetched (LayerReader.prefetch). */
  readonly prefetching?: Promise<void>;
}

export interface LayerFuseOpsOptions {
  /** A read not answered by then fails with EIO. Default 30000. */
  readTimeoutMs?: number;
  /**
   * A read overlapping a range of the same file that failed this recently
   * fails at once: the kernel retries a failed readahead page by page, and
   * each retry would otherwise wait out the reader's whole timeout again.
   * Default 1000; 0 disables.
   */
  failFastMs?: number;
  /** Structured events (read failures, timeouts). */
  log?: (event: Record<string, unknown>) => void;
}

const W_OK = 2;
const BLOCK_SIZE = 4096;
const DIR_SIZE = 4096;

/** LAZYPULL_DEBUG=fuse (or *): every request the kernel sends to this server is logged, to see what a workload asks. */
function fuseDebugEnabled(): boolean {
  return (process.env.LAZYPULL_DEBUG ?? '').split(',').some((n) => n.trim() === '*' || n.trim() === 'fuse');
}

function logEachCall(ops: FuseOperations, log: (event: Record<string, unknown>) => void): FuseOperations {
  const traced: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(ops)) {
    traced[name] = (...args: unknown[]) => {
      log({ event: 'fuse_op', op: name, path: typeof args[0] === 'string' ? args[0] : undefined });
      return (fn as (...a: unknown[]) => unknown)(...args);
    };
  }
  return traced as unknown as FuseOperations;
}

export class LayerFuseOps {
  private readonly readTimeoutMs: number;
  private readonly failFastMs: number;
  /** ino -> the last failed range of that file, and when it failed. */
  private readonly recentFailures = new Map<number, { start: number; end: number; at: number }>();
  private readonly log: (event: Record<string, unknown>) => void;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  /** Counters for status and tests. */
  readonly counters = { reads: 0, readBytes: 0, readErrors: 0, readTimeouts: 0 };

  constructor(
    private readonly index: LayerIndex,
    private readonly reader: InodeReader,
    opts: LayerFuseOpsOptions = {},
  ) {
    this.readTimeoutMs = opts.readTimeoutMs ?? 30_000;
    this.failFastMs = opts.failFastMs ?? 1000;
    this.log = opts.log ?? (() => undefined);
  }

  /** The layer's start-up files, and when their data is on its way: what the mount loads into the kernel's caches. */
  get startup(): { paths: string[]; prefetching?: Promise<void> } {
    return { paths: startupPaths(this.index), prefetching: this.reader.prefetching };
  }

  /** Operations still waiting for the reader. */
  get pending(): number {
    return this.inFlight;
  }

  /** Resolves when no read is in flight, or after `timeoutMs` (false then). */
  waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  stat(node: Inode): FuseStat {
    const type = node.mode & S_IFMT;
    let size = node.size;
    if (type === S_IFLNK) size = Buffer.byteLength(node.linkName ?? '');
    else if (type === S_IFDIR) size = DIR_SIZE;
    const ms = node.mtime * 1000;
    return {
      mode: node.mode,
      uid: node.uid,
      gid: node.gid,
      size,
      nlink: node.nlink,
      ino: node.ino,
      rdev: node.rdev,
      blksize: BLOCK_SIZE,
      blocks: type === S_IFREG || type === S_IFLNK ? Math.ceil(size / 512) : 0,
      atime: ms,
      mtime: ms,
      ctime: ms,
    };
  }

  operations(): FuseOperations {
    const ops = this.handlers();
    return fuseDebugEnabled() ? logEachCall(ops, this.log) : ops;
  }

  private handlers(): FuseOperations {
    const rofs = (...args: unknown[]): void => (args[args.length - 1] as (err: number) => void)(Errno.EROFS);
    return {
      ...this.xattrOperations(),
      getattr: (path, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        return cb(0, this.stat(node));
      },
      readdir: (path, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        if (!node.children) return cb(Errno.ENOTDIR);
        const parent = this.index.lookup(parentPath(path)) ?? node;
        const names = ['.', '..'];
        const stats = [this.stat(node), this.stat(parent)];
        for (const [name, child] of node.children) {
          names.push(name);
          stats.push(this.stat(child));
        }
        return cb(0, names, stats);
      },
      readlink: (path, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        if ((node.mode & S_IFMT) !== S_IFLNK) return cb(Errno.EINVAL);
        return cb(0, node.linkName ?? '');
      },
      // No open/release and no statfs: libfuse answers them itself, which
      // spares this event loop two round trips per opened file and one per
      // overlay mount (those come while a prefetch may keep it busy). Opens
      // keep the page cache (`kernel_cache`); the mount is read-only, so the
      // kernel refuses opens for writing (EROFS) before asking, and reads
      // find the file by path. statfs reports zeros, as stargz-snapshotter's
      // layers do; overlayfs reads only the name length (255) from it.
      read: (path, _fd, buf, len, pos, cb) => this.read(path, buf, len, pos, cb),
      access: (path, mode, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        return cb((mode & W_OK) !== 0 ? Errno.EROFS : 0);
      },
      write: (_p, _fd, _buf, _len, _pos, cb) => cb(Errno.EROFS),
      create: (_p, _mode, cb) => cb(Errno.EROFS),
      truncate: rofs,
      ftruncate: rofs,
      utimens: rofs,
      chown: rofs,
      chmod: rofs,
      mknod: rofs,
      setxattr: rofs,
      removexattr: rofs,
      unlink: rofs,
      rename: rofs,
      link: rofs,
      symlink: rofs,
      mkdir: rofs,
      rmdir: rofs,
    };
  }

  /**
   * getxattr and listxattr, only for a layer that has extended attributes.
   * Without them libfuse answers ENOSYS, so the kernel gives up on xattrs
   * for the mount after the first call: overlayfs asks one or two
   * (trusted.overlay.*) for every lower file and directory it looks up, and
   * exec asks security.capability, each otherwise a round trip to this
   * process. Callers then see EOPNOTSUPP, which overlayfs and exec take as
   * "none" (also when copying a file up).
   */
  private xattrOperations(): Pick<FuseOperations, 'getxattr' | 'listxattr'> {
    if (!this.index.hasXattrs) return {};
    return {
      getxattr: (path, name, _position, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        const value = node.xattrs.get(name);
        if (value === undefined) return cb(Errno.ENODATA);
        return cb(0, value);
      },
      listxattr: (path, cb) => {
        const node = this.index.lookup(path);
        if (!node) return cb(Errno.ENOENT);
        return cb(0, [...node.xattrs.keys()]);
      },
    };
  }

  private read(path: string, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void {
    const node = this.index.lookup(path);
    if (!node) return cb(Errno.EBADF);
    if ((node.mode & S_IFMT) !== S_IFREG) return cb(Errno.EINVAL);
    if (pos >= node.size || len <= 0) return cb(0);
    const length = Math.min(len, node.size - pos);
    const failed = this.recentFailures.get(node.ino);
    if (failed && Date.now() - failed.at < this.failFastMs && pos < failed.end && pos + length > failed.start) {
      this.counters.readErrors++;
      return cb(Errno.EIO);
    }
    this.counters.reads++;
    this.inFlight++;
    let answered = false;
    // The kernel's buffer may be gone once answered: only the first answer touches it.
    const answer = (result: number): void => {
      if (answered) return;
      answered = true;
      clearTimeout(timer);
      if (result < 0) {
        this.counters.readErrors++;
        this.recentFailures.set(node.ino, { start: pos, end: pos + length, at: Date.now() });
        if (this.recentFailures.size > 1024) this.recentFailures.delete(this.recentFailures.keys().next().value as number);
      } else {
        this.counters.readBytes += result;
      }
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
      cb(result);
    };
    const timer = setTimeout(() => {
      this.counters.readTimeouts++;
      this.log({ event: 'read_timeout', path, offset: pos, length, timeoutMs: this.readTimeoutMs });
      answer(Errno.EIO);
    }, this.readTimeoutMs);
    this.reader.read(node, pos, length, path).then(
      (data) => {
        if (answered) return;
        if (data.length !== length) {
          this.log({ event: 'read_failed', path, offset: pos, length, error: `reader returned ${data.length} bytes` });
          return answer(Errno.EIO);
        }
        data.copy(buf, 0, 0, length);
        answer(length);
      },
      (err: unknown) => {
        if (answered) return;
        const e = err as { code?: string; message?: string };
        this.log({ event: 'read_failed', path, offset: pos, length, code: e?.code, error: e?.message ?? String(err) });
        answer(Errno.EIO);
      },
    );
  }
}

function parentPath(path: string): string {
  const trimmed = path.replace(/\/+$/, '');
  const slash = trimmed.lastIndexOf('/');
  return slash <= 0 ? '/' : trimmed.slice(0, slash);
}
