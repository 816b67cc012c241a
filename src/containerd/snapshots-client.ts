/**
 * containerd's Snapshots service as a client sees it (through containerd,
 * naming the snapshotter in each request, so containerd's metadata and
 * garbage collector know about every snapshot), not the proxy plugin side
 * in src/snapshotter.
 */
import { isContainerdError } from './containerd-errors';
import type { ContainerdConnection } from './grpc-connection';
import { fromWireMount, type Mount, type WireMount } from './types';

export type SnapshotKind = 'UNKNOWN' | 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
}

interface WireInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
}

export class SnapshotsClient {
  constructor(private readonly conn: ContainerdConnection, readonly snapshotter: string) {}

  async stat(key: string): Promise<SnapshotInfo | undefined> {
    try {
      const { info } = await this.conn.unary<{ info: WireInfo }>('snapshots', 'Stat', { snapshotter: this.snapshotter, key });
      return { name: info.name, parent: info.parent, kind: info.kind, labels: { ...info.labels } };
    } catch (err) {
      if (isContainerdError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /**
   * An active snapshot `key` on top of `parent` ("" for none). A remote
   * snapshotter that serves the target named by the label
   * `containerd.io/snapshot.ref` itself answers ALREADY_EXISTS, which
   * surfaces as a ContainerdError with that status.
   */
  async prepare(key: string, parent: string, labels: Record<string, string> = {}): Promise<Mount[]> {
    const res = await this.conn.unary<{ mounts: WireMount[] }>('snapshots', 'Prepare', { snapshotter: this.snapshotter, key, parent, labels });
    return (res.mounts ?? []).map(fromWireMount);
  }

  async mounts(key: string): Promise<Mount[]> {
    const res = await this.conn.unary<{ mounts: WireMount[] }>('snapshots', 'Mounts', { snapshotter: this.snapshotter, key });
    return (res.mounts ?? []).map(fromWireMount);
  }

  async commit(name: string, key: string, labels: Record<string, string> = {}): Promise<void> {
    await this.conn.unary('snapshots', 'Commit', { snapshotter: this.snapshotter, name, key, labels });
  }

  async remove(key: string): Promise<void> {
    await this.conn.unary('snapshots', 'Remove', { snapshotter: this.snapshotter, key });
  }
}
