/**
 * FUSE operations for a mount that goes up before its layer is loaded. A
 * layer server mounts while it is still fetching and indexing the TOC, so
 * that the mount (tens of ms of syscalls and libfuse's INIT) overlaps the
 * registry round trip instead of following it. Nobody is told about the
 * mount until the layer is ready, but a request that arrives early (a
 * desktop's file indexer, say) waits for the layer, and gets EIO if the
 * layer fails to load.
 *
 * The set of operations has to be fixed at mount time, before the TOC
 * says whether the layer has extended attributes: getxattr and listxattr
 * are always there and, for a layer without xattrs, answer ENOSYS, which
 * the kernel takes exactly as an unimplemented operation (it stops asking
 * for the rest of the mount).
 */
import { Errno, type FuseOperations } from './fuse-native';
import type { LayerFuseOps } from './fuse-ops';

/** What mountLayer needs of the operations it serves. */
export interface MountableOps {
  operations(): FuseOperations;
  /** Requests still being answered. */
  readonly pending: number;
  /** Resolves true when none is in flight, false after `timeoutMs`. */
  waitIdle(timeoutMs: number): Promise<boolean>;
}

type AnyHandler = (...args: unknown[]) => unknown;

/** Every operation LayerFuseOps may implement: the mount's fixed set. */
const OPERATION_NAMES: ReadonlyArray<keyof FuseOperations> = [
  'getattr',
  'readdir',
  'readlink',
  'read',
  'access',
  'getxattr',
  'listxattr',
  'write',
  'create',
  'truncate',
  'ftruncate',
  'utimens',
  'chown',
  'chmod',
  'mknod',
  'setxattr',
  'removexattr',
  'unlink',
  'rename',
  'link',
  'symlink',
  'mkdir',
  'rmdir',
];

export class PendingFuseOps implements MountableOps {
  private layer: LayerFuseOps | undefined;
  private handlers: FuseOperations | undefined;
  private failed = false;
  /** Requests that came before the layer was ready, replayed (or failed) when it is settled. */
  private waiting: Array<() => void> = [];

  /** The layer is loaded: queued requests and all later ones go to its operations. */
  ready(layer: LayerFuseOps): void {
    this.layer = layer;
    this.handlers = layer.operations();
    this.flush();
  }

  /** The layer could not be loaded: every request answers EIO (the mount is about to go). */
  fail(): void {
    this.failed = true;
    this.flush();
  }

  get pending(): number {
    return this.waiting.length + (this.layer?.pending ?? 0);
  }

  async waitIdle(timeoutMs: number): Promise<boolean> {
    // Before the layer is settled, queued requests cannot finish: nothing to wait for but them.
    if (this.layer === undefined) return this.waiting.length === 0;
    return this.layer.waitIdle(timeoutMs);
  }

  operations(): FuseOperations {
    const ops: Partial<Record<keyof FuseOperations, AnyHandler>> = {};
    for (const name of OPERATION_NAMES) ops[name] = (...args: unknown[]) => this.dispatch(name, args);
    return ops as unknown as FuseOperations;
  }

  private dispatch(name: keyof FuseOperations, args: unknown[]): void {
    if (this.handlers !== undefined) {
      const handler = this.handlers[name] as AnyHandler | undefined;
      if (handler !== undefined) {
        handler(...args);
        return;
      }
      // Not implemented for this layer (xattrs of a layer without any): what libfuse would answer.
      (args[args.length - 1] as (err: number) => void)(Errno.ENOSYS);
      return;
    }
    if (this.failed) {
      (args[args.length - 1] as (err: number) => void)(Errno.EIO);
      return;
    }
    this.waiting.push(() => this.dispatch(name, args));
  }

  private flush(): void {
    for (const replay of this.waiting.splice(0)) replay();
  }
}
