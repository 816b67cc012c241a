/**
 * Mounting and unmounting a LayerFuseOps filesystem with fuse-native
 * (libfuse2): the libfuse options a lazy image layer needs, cleanup of a
 * mount point left behind by a crashed server, the kernel cache warm-up of
 * the layer's start-up files, and an unmount that waits for in-flight
 * reads before it falls back to a lazy detach.
 *
 * The process that mounts serves the mount from its event loop: it must
 * never do blocking I/O on its own mount (see docs: FUSE deadlock). The
 * warm-up reads it with async calls only, one at a time.
 */
import { execFile, execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LazypullError } from '../errors';
import { cleanupOnExit } from '../sandbox/exit-cleanup';
import { Errno, Fuse, type FuseInstance, type FuseOperations } from './fuse-native';
import { KernelCacheWarmup } from './kernel-cache-warmup';
import type { MountableOps } from './pending-fuse-ops';

/** libfuse's limit for one read request without FUSE_MAX_PAGES (libfuse2 never negotiates it). */
export const MAX_READ = 131072;

/**
 * The `-o` options: what fuse-native's own list lacks and a lazy layer needs.
 * - `use_ino`, `readdir_ino`: our inode numbers reach stat(2), so hardlinks share one.
 * - `kernel_cache`, long entry/attr timeouts: the content is immutable.
 * - `max_read`: 128 KiB per read request.
 * - `ro`, `default_permissions` (the kernel checks modes, uids, gids as on a
 *   disk), `allow_other` (containers run as other users), `suid` (setuid
 *   binaries in images work as with an unpacked layer; root only).
 */
export function lazypullFuseOptions(opts: { cacheTimeoutSeconds?: number; root?: boolean } = {}): string[] {
  const t = opts.cacheTimeoutSeconds ?? 3600;
  const root = opts.root ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  return [
    'ro',
    'use_ino',
    'readdir_ino',
    'kernel_cache',
    `max_read=${MAX_READ}`,
    'default_permissions',
    'allow_other',
    ...(root ? ['suid'] : []),
    'fsname=lazypull',
    'subtype=lazypull',
    `entry_timeout=${t}`,
    `attr_timeout=${t}`,
    `negative_timeout=${t}`,
  ];
}

type Signal = (result: number, ...rest: unknown[]) => void;

// The addon itself, for the native half of an unmount (fuse-native keeps it private).
const fuseDir = dirname(require.resolve('fuse-native'));
// eslint-disable-next-line @typescript-eslint/no-require-imports
const binding = require(require.resolve('node-gyp-build', { paths: [fuseDir] }))(fuseDir) as {
  fuse_native_unmount(mnt: string, thread: Buffer): void;
};

/**
 * fuse-native's Fuse with lazypull's options, a correct xattr size protocol
 * (ERANGE when the caller's buffer is too small, exact sizes when it asks),
 * and an unmount that is ours (see unmountKernel).
 */
class LazypullFuse extends Fuse {
  constructor(
    mnt: string,
    ops: FuseOperations,
    private readonly fuseOptions: string[],
    private readonly kernelUnmount: () => Promise<void>,
    timeout: Record<string, number>,
  ) {
    super(mnt, ops, { timeout });
  }

  override _fuseOptions(): string {
    return `-o${this.fuseOptions.join(',')}`;
  }

  _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer, position: number): void {
    this.operations().getxattr!(path, name, position, (err, value) => {
      if (err) return signal(err, valueBuf.buffer);
      if (!value) return signal(Errno.ENODATA, valueBuf.buffer);
      if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer);
      if (value.length > valueBuf.length) return signal(Errno.ERANGE, valueBuf.buffer);
      value.copy(valueBuf);
      return signal(value.length, valueBuf.buffer);
    });
  }

  _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void {
    this.operations().listxattr!(path, (err, names) => {
      if (err || !names) return signal(err || Errno.EIO, listBuf.buffer);
      const list = Buffer.concat(names.map((n) => Buffer.from(`${n}\0`)));
      if (listBuf.length === 0) return signal(list.length, listBuf.buffer);
      if (list.length > listBuf.length) return signal(Errno.ERANGE, listBuf.buffer);
      list.copy(listBuf);
      return signal(list.length, listBuf.buffer);
    });
  }

  /** Called by nanoresource's close(): kernel unmount our way, then release the addon's loop handle. */
  _close(cb: (err: Error | null) => void): void {
    this.kernelUnmount().then(
      () => {
        try {
          binding.fuse_native_unmount(this.mnt, (this as unknown as { _thread: Buffer })._thread);
          cb(null);
        } catch (err) {
          cb(err as Error);
        }
      },
      (err: Error) => cb(err),
    );
  }

  private operations(): FuseOperations {
    return (this as unknown as { ops: FuseOperations }).ops;
  }
}

/** One line of /proc/self/mountinfo, unescaped. */
export interface MountInfo {
  mountpoint: string;
  fstype: string;
  source: string;
  options: string;
}

function unescapeMountinfo(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function listMounts(): Promise<MountInfo[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [left, right] = line.split(' - ');
    const l = left.split(' ');
    const r = (right ?? '').split(' ');
    // mountinfo escapes bytes of non-ASCII paths one by one: decode as UTF-8.
    out.push({
      mountpoint: Buffer.from(unescapeMountinfo(l[4] ?? ''), 'latin1').toString('utf8'),
      options: l[5] ?? '',
      fstype: r[0] ?? '',
      source: unescapeMountinfo(r[1] ?? ''),
    });
  }
  return out;
}

export async function mountsAt(mountpoint: string): Promise<MountInfo[]> {
  const mp = resolve(mountpoint);
  return (await listMounts()).filter((m) => m.mountpoint === mp);
}

function run(cmd: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((done) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      done({ ok: !err, output: `${String(stdout)}${String(stderr)}`.trim() });
    });
  });
}

/** Unmount with fusermount, falling back to umount(8) (root, or fusermount missing). */
async function unmountCommand(mountpoint: string, lazy: boolean): Promise<{ ok: boolean; output: string }> {
  const first = await run('fusermount', [lazy ? '-uz' : '-u', '--', mountpoint]);
  if (first.ok) return first;
  const second = await run('umount', lazy ? ['-l', mountpoint] : [mountpoint]);
  return second.ok ? second : { ok: false, output: `${first.output}; ${second.output}` };
}

/** Whether something is mounted at `mountpoint` whose server is gone (ENOTCONN). */
async function isStale(mountpoint: string): Promise<boolean> {
  try {
    await fs.stat(mountpoint);
    return false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOTCONN' || code === 'ECONNABORTED';
  }
}

/**
 * Clean a mount point a crashed server left behind ("Transport endpoint is
 * not connected"). A live mount there is an error: someone is serving it.
 * Returns how many stale mounts were detached.
 */
export async function cleanStaleMount(mountpoint: string, log: (e: Record<string, unknown>) => void = () => undefined): Promise<number> {
  const mp = resolve(mountpoint);
  let cleaned = 0;
  // Stacked stale mounts are possible (a crash loop); peel them off one by one.
  for (let i = 0; i < 16; i++) {
    const here = await mountsAt(mp);
    const stale = await isStale(mp);
    if (!stale) {
      const fuse = here.filter((m) => m.fstype.startsWith('fuse'));
      if (fuse.length > 0) {
        throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${mp} is already a mounted ${fuse[fuse.length - 1].fstype} filesystem (served by a running process)`, {
          mountpoint: mp,
        });
      }
      return cleaned;
    }
    log({ event: 'stale_mount_cleanup', mountpoint: mp, fstype: here[here.length - 1]?.fstype });
    const res = await unmountCommand(mp, true);
    if (!res.ok) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${mp}: cannot clean up a stale mount (${res.output})`, { mountpoint: mp });
    }
    cleaned++;
  }
  throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${mp}: stale mounts keep reappearing`, { mountpoint: mp });
}

export interface MountOptions {
  /** Wait this long for in-flight reads and a busy mount before detaching lazily. Default 10000. */
  unmountTimeoutMs?: number;
  /** How long to wait for the kernel's INIT. Default 20000. */
  mountTimeoutMs?: number;
  /** Default: lazypullFuseOptions(). */
  fuseOptions?: string[];
  /** fuse-native's own per-operation timeout (a backstop behind LayerFuseOps' read timeout). Default 120000. */
  opTimeoutMs?: number;
  log?: (event: Record<string, unknown>) => void;
}

export interface MountedLayer {
  readonly mountpoint: string;
  /**
   * Load the layer's start-up files into the kernel's caches once
   * `prefetching` resolves (kernel-cache-warmup.ts); stopped by unmount.
   */
  warmKernelCache(paths: string[], prefetching: Promise<void>): void;
  /** Idempotent. Waits for in-flight reads, unmounts, detaches lazily after the timeout. */
  unmount(): Promise<void>;
  readonly mounted: boolean;
}

/**
 * Mount `ops` at `mountpoint` (created if missing), cleaning a stale mount
 * first. Registers an exit hook that detaches the mount if the process
 * exits without unmounting.
 */
export async function mountLayer(mountpoint: string, ops: MountableOps, opts: MountOptions = {}): Promise<MountedLayer> {
  const mp = resolve(mountpoint);
  const log = opts.log ?? (() => undefined);
  const unmountTimeoutMs = opts.unmountTimeoutMs ?? 10_000;
  await cleanStaleMount(mp, log);
  await fs.mkdir(mp, { recursive: true });
  const st = await fs.stat(mp);
  if (!st.isDirectory()) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `mount point ${mp} is not a directory`, { mountpoint: mp });

  let mounted = false;
  let unmounting: Promise<void> | undefined;

  const kernelUnmount = async (): Promise<void> => {
    const deadline = Date.now() + unmountTimeoutMs;
    const idle = await ops.waitIdle(unmountTimeoutMs);
    if (!idle) log({ event: 'unmount_wait_timeout', mountpoint: mp, pending: ops.pending });
    for (;;) {
      if ((await mountsAt(mp)).every((m) => !m.fstype.startsWith('fuse'))) return;
      const res = await unmountCommand(mp, false);
      if (res.ok) return;
      if (Date.now() >= deadline) {
        log({ event: 'unmount_lazy', mountpoint: mp, reason: res.output });
        const lazy = await unmountCommand(mp, true);
        if (!lazy.ok) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `cannot unmount ${mp}: ${lazy.output}`, { mountpoint: mp });
        return;
      }
      await sleep(200);
    }
  };

  const fuse: FuseInstance = new LazypullFuse(mp, ops.operations(), opts.fuseOptions ?? lazypullFuseOptions(), kernelUnmount, {
    default: opts.opTimeoutMs ?? 120_000,
  });

  const removeExitHook = cleanupOnExit(() => {
    if (!mounted) return;
    // Last resort on exit: a detach needs no answer from this (exiting) server.
    // umount -c does not canonicalize, so it never stats the mount this blocked process serves.
    try {
      execFileSync('umount', ['-l', '-c', mp], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      try {
        execFileSync('fusermount', ['-uz', '--', mp], { stdio: 'ignore', timeout: 10_000 });
      } catch {
        // nothing more to do while exiting
      }
    }
  });

  try {
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(() => fail(new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `mounting ${mp}: no INIT from the kernel`, { mountpoint: mp })), opts.mountTimeoutMs ?? 20_000);
      fuse.mount((err) => {
        clearTimeout(timer);
        if (err) fail(new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `cannot mount FUSE at ${mp}: ${err.message} (is /dev/fuse available and are you root?)`, { mountpoint: mp }, { cause: err }));
        else done();
      });
    });
    mounted = true;
  } catch (err) {
    removeExitHook();
    // fuse_mount may have succeeded before INIT failed: leave nothing behind.
    if ((await mountsAt(mp)).some((m) => m.fstype.startsWith('fuse'))) await unmountCommand(mp, true);
    throw err;
  }
  log({ event: 'mounted', mountpoint: mp });
  let warmup: KernelCacheWarmup | undefined;

  return {
    mountpoint: mp,
    get mounted() {
      return mounted;
    },
    warmKernelCache(paths: string[], prefetching: Promise<void>): void {
      if (warmup !== undefined || unmounting !== undefined) return;
      warmup = new KernelCacheWarmup(mp, paths, { log });
      warmup.start(prefetching);
    },
    unmount(): Promise<void> {
      unmounting ??= (async () => {
        // Its open files would keep the mount busy.
        await warmup?.stop();
        await new Promise<void>((done, fail) => {
          fuse.unmount((err) => {
            if (err) return fail(err);
            mounted = false;
            removeExitHook();
            log({ event: 'unmounted', mountpoint: mp });
            done();
          });
        });
      })();
      return unmounting;
    },
  };
}
