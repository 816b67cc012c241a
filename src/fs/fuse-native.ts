/**
 * The `fuse-native` addon (libfuse2, high-level path API), typed as far as
 * lazypull uses it. fuse-native ships no type definitions; this file is the
 * one place that `require`s it, so the rest of src/fs stays typed.
 *
 * Callback conventions of fuse-native: `cb(0, value)` for success,
 * `cb(-errno)` for failure; `read` answers `cb(bytesRead)` or `cb(-errno)`.
 */

/** What `getattr`/`readdir` hand back; times in milliseconds since the epoch. */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  dev?: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize?: number;
  blocks?: number;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

type ErrCb = (err: number) => void;

/** The operations lazypull implements (fuse-native calls only those present). */
export interface FuseOperations {
  init?(cb: ErrCb): void;
  getattr(path: string, cb: (err: number, stat?: FuseStat) => void): void;
  fgetattr?(path: string, fd: number, cb: (err: number, stat?: FuseStat) => void): void;
  readdir(path: string, cb: (err: number, names?: string[], stats?: FuseStat[]) => void): void;
  readlink(path: string, cb: (err: number, target?: string) => void): void;
  /** Left out (with release), libfuse answers opens itself with file handle 0. */
  open?(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
  opendir?(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
  read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void;
  release?(path: string, fd: number, cb: ErrCb): void;
  releasedir?(path: string, fd: number, cb: ErrCb): void;
  /** Left out, libfuse answers ENOSYS itself and the kernel stops asking for the whole mount. */
  getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer) => void): void;
  listxattr?(path: string, cb: (err: number, names?: string[]) => void): void;
  /** Left out, libfuse answers itself: zero blocks and files, 255 for the name length. */
  statfs?(path: string, cb: (err: number, statfs?: FuseStatfs) => void): void;
  access(path: string, mode: number, cb: ErrCb): void;
  // Every modifying operation answers EROFS.
  write(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void;
  create(path: string, mode: number, cb: (err: number, fd?: number) => void): void;
  truncate(path: string, size: number, cb: ErrCb): void;
  ftruncate(path: string, fd: number, size: number, cb: ErrCb): void;
  utimens(path: string, atime: number, mtime: number, cb: ErrCb): void;
  chown(path: string, uid: number, gid: number, cb: ErrCb): void;
  chmod(path: string, mode: number, cb: ErrCb): void;
  mknod(path: string, mode: number, dev: number, cb: ErrCb): void;
  setxattr(path: string, name: string, value: Buffer, position: number, flags: number, cb: ErrCb): void;
  removexattr(path: string, name: string, cb: ErrCb): void;
  unlink(path: string, cb: ErrCb): void;
  rename(src: string, dest: string, cb: ErrCb): void;
  link(src: string, dest: string, cb: ErrCb): void;
  symlink(src: string, dest: string, cb: ErrCb): void;
  mkdir(path: string, mode: number, cb: ErrCb): void;
  rmdir(path: string, cb: ErrCb): void;
}

/** Per-operation timeouts (ms) after which fuse-native answers ETIMEDOUT itself; `false` for none. */
export type FuseTimeout = number | false | ({ default?: number } & Record<string, number | false | undefined>);

export interface FuseNativeOptions {
  timeout?: FuseTimeout;
  mkdir?: boolean;
  force?: boolean;
  debug?: boolean;
  [option: string]: unknown;
}

/** The addon's Fuse class. `_fuseOptions` builds the `-o` string handed to libfuse. */
export interface FuseInstance {
  readonly mnt: string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: (Error & { unmountFailure?: boolean }) | null) => void): void;
  _fuseOptions(): string;
}

export interface FuseClass {
  new (mnt: string, ops: FuseOperations, opts?: FuseNativeOptions): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  readonly prototype: FuseInstance;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const Fuse = require('fuse-native') as FuseClass;

/** Negative errno values as fuse-native expects them (Linux numbering). */
export const Errno = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EACCES: -13,
  EEXIST: -17,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EROFS: -30,
  ERANGE: -34,
  ENOSYS: -38,
  ENODATA: -61,
  ENOTSUP: -95,
} as const;
