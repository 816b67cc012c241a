/**
 * The snapshotter's semantics, as containerd's overlay snapshotter has
 * them: active snapshots are overlay upper/work directories over their
 * committed parents, views are read-only, committed snapshots keep their
 * directories. Remote (lazily mounted) layers plug in through
 * `RemoteLayers`: when one can serve a layer, Prepare commits it directly
 * and answers ALREADY_EXISTS, so containerd skips download and unpack.
 * Independent of gRPC; `grpc-service.ts` exposes it.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { matchesFilters, parseFilters } from './list-filters';
import { MetadataStore, type RemoteLayerSource, type SnapshotKind, type SnapshotRecord } from './metadata-store';
import { SnapshotError } from './snapshot-errors';
import { directoryUsage } from './usage';
import { trace } from '../util/trace';

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export const LABEL_TARGET_REF = 'containerd.io/snapshot.ref';
const TOC_DIGEST_LABEL = 'containerd.io/snapshot/stargz/toc.digest';
/** How many following layers to start mounting while one is prepared. */
const MAX_LAYERS_AHEAD = 3;
/** A layer mounted ahead that containerd never asks for is dropped after this long. */
const STAGED_MOUNT_TTL_MS = 10 * 60 * 1000;
export const LABEL_REMOTE = 'containerd.io/snapshot/remote';

/** A source of lazily mounted layers (the FUSE filesystem). */
export interface RemoteLayers {
  /**
   * Mount the layer the Prepare labels describe at `mountpoint`, or return
   * undefined when it cannot be served lazily (not eStargz, TOC refused,
   * not enough information): containerd then downloads and unpacks it.
   */
  mount(labels: Record<string, string>, mountpoint: string, opts?: { ahead?: boolean }): Promise<RemoteLayerSource | undefined>;
  /** Identity of the layer the labels name, to match a mount started ahead of its Prepare. */
  layerKey(labels: Record<string, string>): string | undefined;
  /** Labels of the layers likely to be prepared next (CRI's cri.image-layers), to start early. */
  upcoming(labels: Record<string, string>): Array<Record<string, string>>;
  /** Mount a layer again after a restart. */
  remount(source: RemoteLayerSource, mountpoint: string): Promise<void>;
  unmount(mountpoint: string): Promise<void>;
}

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  createdAt: number;
  updatedAt: number;
  labels: Record<string, string>;
}

export interface SnapshotterOptions {
  root: string;
  remote?: RemoteLayers;
  log?: (event: Record<string, unknown>) => void;
}

function info(record: SnapshotRecord): SnapshotInfo {
  return { name: record.key, parent: record.parent, kind: record.kind, createdAt: record.createdAt, updatedAt: record.updatedAt, labels: { ...record.labels } };
}

function requireKey(key: string, what = 'key'): void {
  if (!key) throw new SnapshotError('INVALID_ARGUMENT', `${what} must not be empty`);
}

export class Snapshotter {
  readonly store: MetadataStore;
  private readonly snapshotsDir: string;
  private readonly log: (event: Record<string, unknown>) => void;
  /** Directories being set up whose metadata is not committed yet: Cleanup must leave them alone. */
  private readonly creating = new Set<string>();
  /** Layer servers started ahead of their Prepare, by layer key. */
  private readonly staged = new Map<string, { id: string; mounted: Promise<RemoteLayerSource | undefined>; expiry: NodeJS.Timeout }>();

  private constructor(private readonly opts: SnapshotterOptions, store: MetadataStore) {
    this.store = store;
    this.snapshotsDir = join(opts.root, 'snapshots');
    this.log = opts.log ?? (() => undefined);
  }

  static async open(opts: SnapshotterOptions): Promise<Snapshotter> {
    await fs.mkdir(join(opts.root, 'snapshots'), { recursive: true, mode: 0o700 });
    const store = MetadataStore.open(join(opts.root, 'metadata'));
    return new Snapshotter(opts, store);
  }

  private fsDir(id: string): string {
    return join(this.snapshotsDir, id, 'fs');
  }

  private workDir(id: string): string {
    return join(this.snapshotsDir, id, 'work');
  }

  /** Mount again every committed remote layer (after a restart), before serving requests. */
  async restoreRemoteLayers(): Promise<void> {
    if (!this.opts.remote) return;
    for (const record of this.store.list()) {
      if (!record.remote) continue;
      try {
        await this.opts.remote.remount(record.remote, this.fsDir(record.id));
        this.log({ event: 'remote_layer_restored', key: record.key, layer: record.remote.layerDigest });
      } catch (err) {
        this.log({ event: 'remote_layer_restore_failed', key: record.key, layer: record.remote.layerDigest, error: (err as Error).message });
      }
    }
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    requireKey(key);
    const target = labels[LABEL_TARGET_REF];
    if (target && this.opts.remote) {
      if (this.store.get(target)) throw new SnapshotError('ALREADY_EXISTS', `target snapshot ${target} already exists`);
      if (await this.prepareRemote(target, parent, labels)) {
        throw new SnapshotError('ALREADY_EXISTS', `target snapshot ${target} is served remotely`);
      }
    }
    return this.create('ACTIVE', key, parent, labels);
  }

  async view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    requireKey(key);
    return this.create('VIEW', key, parent, labels);
  }

  private async create(kind: SnapshotKind, key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const id = randomBytes(8).toString('hex');
    this.creating.add(id);
    try {
      await fs.mkdir(this.fsDir(id), { recursive: true, mode: 0o755 });
      if (kind === 'ACTIVE') await fs.mkdir(this.workDir(id), { mode: 0o700 });
      const record = this.store.transact((tx) => {
        if (tx.get(key)) throw new SnapshotError('ALREADY_EXISTS', `snapshot ${key} already exists`);
        if (parent) {
          const p = tx.get(parent);
          if (!p) throw new SnapshotError('NOT_FOUND', `parent snapshot ${parent} does not exist`);
          if (p.kind !== 'COMMITTED') throw new SnapshotError('INVALID_ARGUMENT', `parent ${parent} is not a committed snapshot`);
        }
        const now = Date.now();
        const r: SnapshotRecord = { key, id, kind, parent, labels: { ...labels }, createdAt: now, updatedAt: now };
        tx.put(r);
        return r;
      });
      return this.mountsFor(record);
    } catch (err) {
      await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true });
      throw err;
    } finally {
      this.creating.delete(id);
    }
  }

  /** Try to serve a layer lazily; true when the target snapshot now exists as a remote layer. */
  private async prepareRemote(target: string, parent: string, labels: Record<string, string>): Promise<boolean> {
    const remote = this.opts.remote!;
    // Start the next layers' servers now: their TOCs are fetched while this one mounts.
    for (const next of remote.upcoming(labels).slice(0, MAX_LAYERS_AHEAD)) this.stage(next);
    const key = remote.layerKey(labels);
    const staged = key !== undefined ? this.staged.get(key) : undefined;
    let id: string;
    let mounted: Promise<RemoteLayerSource | undefined>;
    if (staged && key) {
      this.staged.delete(key);
      clearTimeout(staged.expiry);
      ({ id, mounted } = staged);
    } else {
      id = randomBytes(8).toString('hex');
      this.creating.add(id);
      mounted = this.startMount(id, labels, false);
    }
    try {
      const source = await mounted;
      if (!source) {
        await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true });
        return false;
      }
      if (labels[TOC_DIGEST_LABEL] && source.tocDigest && labels[TOC_DIGEST_LABEL] !== source.tocDigest) {
        // Mounted ahead with the TOC the manifest named; containerd expects another one.
        await remote.unmount(this.fsDir(id)).catch(() => undefined);
        await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true });
        return false;
      }
      return await this.commitRemote(id, target, parent, labels, source);
    } finally {
      this.creating.delete(id);
    }
  }

  private async startMount(id: string, labels: Record<string, string>, ahead: boolean): Promise<RemoteLayerSource | undefined> {
    const mountpoint = this.fsDir(id);
    try {
      // Synchronous: a mkdir takes microseconds, a trip through a busy thread pool can take milliseconds.
      mkdirSync(mountpoint, { recursive: true, mode: 0o755 });
      return await this.opts.remote!.mount(labels, mountpoint, { ahead });
    } catch (err) {
      this.log({ event: 'remote_mount_failed', layer: this.opts.remote!.layerKey(labels), error: (err as Error).message });
      return undefined;
    }
  }

  /**
   * Start mounting layers that a Prepare with these labels will ask for
   * soon (`lazypull pull` in this daemon knows them before containerd
   * calls): their TOCs load while containerd gets ready. Without remote
   * layers, or for a layer already on its way, nothing happens.
   */
  mountAhead(layers: Array<Record<string, string>>): void {
    if (!this.opts.remote) return;
    trace('snapshotter.mount-ahead');
    // A layer this daemon serves already (for another containerd namespace) is not mounted again: containerd finds it by its chain ID.
    const missing = layers.filter((labels) => !(labels[LABEL_TARGET_REF] && this.store.get(labels[LABEL_TARGET_REF]!)));
    for (const labels of missing.slice(0, MAX_LAYERS_AHEAD + 1)) {
      this.log({ level: 'debug', event: 'mount_ahead', layer: this.opts.remote.layerKey(labels) });
      this.stage(labels);
    }
  }

  /** Mount a layer before containerd asks for it; unclaimed mounts are dropped after a while. */
  private stage(labels: Record<string, string>): void {
    const remote = this.opts.remote!;
    const key = remote.layerKey(labels);
    if (!key || this.staged.has(key)) return;
    const id = randomBytes(8).toString('hex');
    this.creating.add(id);
    const mounted = this.startMount(id, labels, true);
    const expiry = setTimeout(() => {
      if (this.staged.get(key)?.id !== id) return;
      this.staged.delete(key);
      void mounted.then(async (source) => {
        if (source) await remote.unmount(this.fsDir(id)).catch(() => undefined);
        await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true });
        this.creating.delete(id);
      });
    }, STAGED_MOUNT_TTL_MS);
    expiry.unref();
    this.staged.set(key, { id, mounted, expiry });
  }

  private async commitRemote(id: string, target: string, parent: string, labels: Record<string, string>, source: RemoteLayerSource): Promise<boolean> {
    const remote = this.opts.remote!;
    const mountpoint = this.fsDir(id);
    try {
      this.store.transact((tx) => {
        if (tx.get(target)) throw new SnapshotError('ALREADY_EXISTS', `target snapshot ${target} already exists`);
        if (parent) {
          const p = tx.get(parent);
          if (!p || p.kind !== 'COMMITTED') throw new SnapshotError('NOT_FOUND', `parent snapshot ${parent} is not committed`);
        }
        const now = Date.now();
        tx.put({
          key: target, id, kind: 'COMMITTED', parent, createdAt: now, updatedAt: now, remote: source,
          labels: { ...labels, [LABEL_REMOTE]: 'remote snapshot' }, usage: { size: 0, inodes: 0 },
        });
      });
    } catch (err) {
      await remote.unmount(mountpoint).catch(() => undefined);
      await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true });
      // A concurrent Prepare of the same layer won the race: the layer is there either way.
      if (err instanceof SnapshotError && err.code === 'ALREADY_EXISTS') return true;
      throw err;
    }
    this.log({ event: 'remote_layer_mounted', target, layer: source.layerDigest });
    return true;
  }

  mounts(key: string): Mount[] {
    const record = this.store.require(key);
    if (record.kind === 'COMMITTED') throw new SnapshotError('FAILED_PRECONDITION', `snapshot ${key} is committed; only active snapshots and views have mounts`);
    return this.mountsFor(record);
  }

  private mountsFor(record: SnapshotRecord): Mount[] {
    const parents = record.parent ? this.store.chain(record.parent).map((p) => this.fsDir(p.id)) : [];
    if (record.kind === 'ACTIVE') {
      if (parents.length === 0) return [{ type: 'bind', source: this.fsDir(record.id), options: ['rw', 'rbind'] }];
      return [{
        type: 'overlay',
        source: 'overlay',
        options: [`workdir=${this.workDir(record.id)}`, `upperdir=${this.fsDir(record.id)}`, `lowerdir=${parents.join(':')}`],
      }];
    }
    // A view: read-only. overlayfs needs two lower dirs; one is a bind mount.
    if (parents.length === 0) return [{ type: 'bind', source: this.fsDir(record.id), options: ['ro', 'rbind'] }];
    if (parents.length === 1) return [{ type: 'bind', source: parents[0], options: ['ro', 'rbind'] }];
    return [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${parents.join(':')}`] }];
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    requireKey(name, 'name');
    requireKey(key);
    const active = this.store.require(key);
    if (active.kind !== 'ACTIVE') throw new SnapshotError('FAILED_PRECONDITION', `snapshot ${key} is not active`);
    // Measured before the transaction: the directory no longer changes once containerd commits.
    const usage = await directoryUsage(this.fsDir(active.id));
    this.store.transact((tx) => {
      const current = tx.require(key);
      if (current.kind !== 'ACTIVE') throw new SnapshotError('FAILED_PRECONDITION', `snapshot ${key} is not active`);
      if (tx.get(name)) throw new SnapshotError('ALREADY_EXISTS', `snapshot ${name} already exists`);
      const now = Date.now();
      tx.remove(key);
      tx.put({ ...current, key: name, kind: 'COMMITTED', labels: { ...labels }, createdAt: now, updatedAt: now, usage });
    });
    await fs.rm(this.workDir(active.id), { recursive: true, force: true });
  }

  async remove(key: string): Promise<void> {
    requireKey(key);
    const record = this.store.transact((tx) => {
      const r = tx.require(key);
      if (tx.hasChildren(key)) throw new SnapshotError('FAILED_PRECONDITION', `snapshot ${key} has children`);
      tx.remove(key);
      return r;
    });
    if (record.remote && this.opts.remote) await this.opts.remote.unmount(this.fsDir(record.id)).catch(() => undefined);
    await fs.rm(join(this.snapshotsDir, record.id), { recursive: true, force: true }).catch((err) => {
      // Cleanup retries what could not be removed now.
      this.log({ event: 'remove_dir_failed', key, error: (err as Error).message });
    });
  }

  stat(key: string): SnapshotInfo {
    requireKey(key);
    return info(this.store.require(key));
  }

  /** Only labels are mutable; `paths` are "labels" or "labels.<key>", empty means all labels. */
  update(key: string, labels: Record<string, string>, paths: string[]): SnapshotInfo {
    requireKey(key);
    return info(this.store.transact((tx) => {
      const record = tx.require(key);
      let next: Record<string, string>;
      if (paths.length === 0) next = { ...labels };
      else {
        next = { ...record.labels };
        for (const path of paths) {
          if (path === 'labels') next = { ...labels };
          else if (path.startsWith('labels.')) {
            const label = path.slice('labels.'.length);
            if (label in labels) next[label] = labels[label];
            else delete next[label];
          } else throw new SnapshotError('INVALID_ARGUMENT', `cannot update field "${path}" of snapshot ${key}`);
        }
      }
      const updated = { ...record, labels: next, updatedAt: Date.now() };
      tx.put(updated);
      return updated;
    }));
  }

  list(filters: string[]): SnapshotInfo[] {
    const parsed = parseFilters(filters);
    return this.store.list().map(info).filter((i) => matchesFilters(parsed, i));
  }

  async usage(key: string): Promise<{ size: number; inodes: number }> {
    requireKey(key);
    const record = this.store.require(key);
    if (record.kind === 'COMMITTED' && record.usage) return record.usage;
    return directoryUsage(this.fsDir(record.id));
  }

  /** Remove snapshot directories no snapshot refers to (left by crashes or failed removals). */
  async cleanup(): Promise<void> {
    const known = new Set(this.store.list().map((r) => r.id));
    for (const id of await fs.readdir(this.snapshotsDir)) {
      if (known.has(id) || this.creating.has(id)) continue;
      if (this.opts.remote) await this.opts.remote.unmount(this.fsDir(id)).catch(() => undefined);
      await fs.rm(join(this.snapshotsDir, id), { recursive: true, force: true }).catch((err) => {
        this.log({ event: 'cleanup_failed', id, error: (err as Error).message });
      });
    }
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}
