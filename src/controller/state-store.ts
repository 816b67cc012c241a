/**
 * The controller's state in an embedded transactional store (LMDB): applied
 * CloneSets, the template of every revision seen, per pod the revision it
 * runs, its InPlaceUpdateReady gate and the step of an upgrade under way, and
 * the labels a user added to a pod (`rollout label`).
 * The controller writes a step here before it executes it, and every write
 * is one ACID transaction, so after a `kill -9` at any point a restarted
 * controller finds either the step before or the step it was taking.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import type { CloneSetSpec, PodTemplate } from './types';

export interface SetRecord {
  name: string;
  spec: CloneSetSpec;
  /** Revision hash of spec.template. */
  updateRevision: string;
  /** Bumped by every apply, pause and resume. */
  generation: number;
  /** ms since the epoch. */
  createdAt: number;
  updatedAt: number;
  /** DELETE accepted: pods are being removed. */
  deleting?: boolean;
}

export interface RevisionRecord {
  set: string;
  revision: string;
  template: PodTemplate;
  createdAt: number;
}

export type UpgradeKind = 'inPlace' | 'recreate' | 'create' | 'delete';

/**
 * Steps of an upgrade. In place: gateClosed → replacing → verifying → (done).
 * Recreate: deleting → creating → (done). Create: creating. Delete: deleting.
 */
export type UpgradePhase = 'gateClosed' | 'replacing' | 'verifying' | 'deleting' | 'creating';

export interface PodUpgrade {
  kind: UpgradeKind;
  phase: UpgradePhase;
  fromRevision?: string;
  toRevision: string;
  /** Containers replaced in place. */
  changed: string[];
  /** Container name → image reference (repo digest) before the upgrade. */
  recordedImageRefs: Record<string, string>;
  /** Container name → container id before the upgrade. */
  recordedContainerIds: Record<string, string>;
  /** When the readiness gate was closed (ms since the epoch). */
  gateClosedAt?: number;
  startedAt: number;
}

export interface PodRecord {
  set: string;
  name: string;
  /** Revision the pod runs (or is being moved to, once its containers are replaced). */
  revision: string;
  /** The InPlaceUpdateReady readiness gate. */
  inPlaceUpdateReady: boolean;
  upgrade?: PodUpgrade;
  /** Upgrades completed on this pod (in place or recreate), for audits and tests. */
  upgrades: number;
  updatedAt: number;
}

/**
 * Labels added to a pod after it was created, and the sandbox they belong to
 * (a recreated pod does not inherit them). Kept apart from PodRecord, which
 * upgrade steps rewrite from copies they read before a long await.
 */
export interface PodLabelsRecord {
  set: string;
  name: string;
  sandboxId: string;
  labels: Record<string, string>;
  updatedAt: number;
}

const key = (set: string, name: string): string => `${set}/${name}`;
/** The keys "<set>/…" ('0' follows '/' in ASCII). */
const setRange = (set: string): { start: string; end: string } => ({ start: `${set}/`, end: `${set}0` });

/** Records of a set's pods, keyed "<set>/<pod>"; every write is one transaction, stamped with its time. */
export class PodTable<T extends { set: string; name: string; updatedAt: number }> {
  constructor(
    private readonly root: RootDatabase,
    readonly db: Database<T, string>,
    private readonly committed: () => void = () => undefined,
  ) {}

  get(set: string, name: string): T | undefined {
    return this.db.get(key(set, name));
  }

  list(set: string): T[] {
    return [...this.db.getRange(setRange(set))].map(({ value }) => value);
  }

  put(record: T): void {
    this.root.transactionSync(() => this.db.putSync(key(record.set, record.name), { ...record, updatedAt: Date.now() }));
    this.committed();
  }

  delete(set: string, name: string): void {
    this.root.transactionSync(() => this.db.removeSync(key(set, name)));
    this.committed();
  }
}

export class StateStore {
  private readonly pods: PodTable<PodRecord>;
  /** Labels added to pods (`rollout label`). */
  readonly podLabels: PodTable<PodLabelsRecord>;
  private readonly commitListeners = new Set<() => void>();

  private constructor(
    private readonly root: RootDatabase,
    private readonly sets: Database<SetRecord, string>,
    private readonly revisions: Database<RevisionRecord, string>,
    pods: Database<PodRecord, string>,
    podLabels: Database<PodLabelsRecord, string>,
  ) {
    const committed = (): void => this.committed();
    this.pods = new PodTable(root, pods, committed);
    this.podLabels = new PodTable(root, podLabels, committed);
  }

  /** Call `listener` after every committed write (what watchers of the state follow); returns the unsubscribe. */
  onCommit(listener: () => void): () => void {
    this.commitListeners.add(listener);
    return () => this.commitListeners.delete(listener);
  }

  private committed(): void {
    for (const listener of this.commitListeners) listener();
  }

  /** Open (or create) the store in directory `path`. */
  static open(path: string): StateStore {
    const root = open({ path, compression: false });
    return new StateStore(
      root,
      root.openDB<SetRecord, string>({ name: 'sets', encoding: 'json' }),
      root.openDB<RevisionRecord, string>({ name: 'revisions', encoding: 'json' }),
      root.openDB<PodRecord, string>({ name: 'pods', encoding: 'json' }),
      root.openDB<PodLabelsRecord, string>({ name: 'podLabels', encoding: 'json' }),
    );
  }

  getSet(name: string): SetRecord | undefined {
    return this.sets.get(name);
  }

  listSets(): SetRecord[] {
    return [...this.sets.getRange({})].map(({ value }) => value);
  }

  /** Store the set and its current revision's template in one transaction. */
  putSet(record: SetRecord, revision?: RevisionRecord): void {
    this.root.transactionSync(() => {
      this.sets.putSync(record.name, record);
      if (revision !== undefined && this.revisions.get(key(revision.set, revision.revision)) === undefined) {
        this.revisions.putSync(key(revision.set, revision.revision), revision);
      }
    });
    this.committed();
  }

  /** Forget a set with its revisions, pod records and added pod labels. */
  deleteSet(name: string): void {
    this.root.transactionSync(() => {
      for (const db of [this.revisions, this.pods.db, this.podLabels.db] as Array<Database<unknown, string>>) {
        for (const { key: k } of db.getRange(setRange(name))) db.removeSync(k);
      }
      this.sets.removeSync(name);
    });
    this.committed();
  }

  getRevision(set: string, revision: string): RevisionRecord | undefined {
    return this.revisions.get(key(set, revision));
  }

  getPod(set: string, name: string): PodRecord | undefined {
    return this.pods.get(set, name);
  }

  listPods(set: string): PodRecord[] {
    return this.pods.list(set);
  }

  putPod(record: PodRecord): void {
    this.pods.put(record);
  }

  deletePod(set: string, name: string): void {
    this.pods.delete(set, name);
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
