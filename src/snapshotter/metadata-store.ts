/**
 * Snapshot metadata in an embedded transactional store (LMDB): kind,
 * parent chain, labels, timestamps and usage, keyed by snapshot key (an
 * active or view snapshot's key, or a committed snapshot's name). Every
 * change is one ACID transaction, so a `kill -9` at any point leaves either
 * the old or the new state, never a half-written one.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { SnapshotError } from './snapshot-errors';

export type SnapshotKind = 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface SnapshotRecord {
  key: string;
  /** Directory id under the snapshotter root: stable for the snapshot's lifetime, survives Commit. */
  id: string;
  kind: SnapshotKind;
  parent: string;
  labels: Record<string, string>;
  createdAt: number;
  updatedAt: number;
  /** Bytes and inodes, measured at commit (committed snapshots only). */
  usage?: { size: number; inodes: number };
  /** Set for layers served lazily: what to mount and from where. */
  remote?: RemoteLayerSource;
}

/** Enough to mount a remote layer again after a restart. */
export interface RemoteLayerSource {
  imageRef: string;
  layerDigest: string;
  tocDigest?: string;
}

export class MetadataStore {
  private constructor(private readonly root: RootDatabase, private readonly snapshots: Database<SnapshotRecord, string>) {}

  static open(path: string): MetadataStore {
    const root = open({ path, compression: false });
    const snapshots = root.openDB<SnapshotRecord, string>({ name: 'snapshots' });
    return new MetadataStore(root, snapshots);
  }

  get(key: string): SnapshotRecord | undefined {
    return this.snapshots.get(key);
  }

  require(key: string): SnapshotRecord {
    const record = this.get(key);
    if (!record) throw new SnapshotError('NOT_FOUND', `snapshot ${key} does not exist`);
    return record;
  }

  /** All snapshots, in key order. */
  list(): SnapshotRecord[] {
    return [...this.snapshots.getRange({})].map(({ value }) => value);
  }

  hasChildren(key: string): boolean {
    for (const { value } of this.snapshots.getRange({})) if (value.parent === key) return true;
    return false;
  }

  /** The snapshot and its ancestors, nearest first. */
  chain(key: string): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    let next: string | undefined = key;
    while (next) {
      const record = this.require(next);
      out.push(record);
      next = record.parent || undefined;
      if (out.length > 4096) throw new SnapshotError('INTERNAL', `parent chain of ${key} does not end`);
    }
    return out;
  }

  /** Run `change` as one transaction; its reads see a consistent state and its writes land together or not at all. */
  transact<T>(change: (tx: StoreTransaction) => T): T {
    return this.root.transactionSync(() => change(new StoreTransaction(this)));
  }

  /** Used by StoreTransaction only. */
  putRecord(record: SnapshotRecord): void {
    this.snapshots.putSync(record.key, record);
  }

  removeRecord(key: string): void {
    this.snapshots.removeSync(key);
  }

  /** Wait until everything written is on disk. */
  async flushed(): Promise<void> {
    await this.root.flushed;
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

/** Writes inside one transaction. */
export class StoreTransaction {
  constructor(private readonly store: MetadataStore) {}

  get(key: string): SnapshotRecord | undefined {
    return this.store.get(key);
  }

  require(key: string): SnapshotRecord {
    return this.store.require(key);
  }

  hasChildren(key: string): boolean {
    return this.store.hasChildren(key);
  }

  put(record: SnapshotRecord): void {
    this.store.putRecord(record);
  }

  remove(key: string): void {
    this.store.removeRecord(key);
  }
}
