/**
 * The reconcile loop of the in-place upgrade controller. It decides nothing
 * about the rollout itself: for each applied CloneSet it observes the pods
 * through a PodRuntime, asks the pure planner (rollout-planner.ts) what to do
 * next, and executes the actions, each step written to the state store
 * before it is taken, so that a controller killed at any point and started
 * again carries on where it stopped.
 *
 * In place, per pod: pull the new images (a failure blocks the pod, which
 * keeps serving its old containers) → close the InPlaceUpdateReady gate (the
 * pod leaves the ready set) → wait gracePeriodSeconds → replace the changed
 * containers → open the gate once the new containers run, pass their
 * readiness probes and report an image reference other than the recorded
 * one. Recreate: close the gate, delete, create. A pod with a step under way
 * counts as unavailable to the planner.
 *
 * Pre-warming: when a revision appears, its images are pulled (2 at a time)
 * before the first pod is touched.
 *
 * Labels a user adds to a pod (`rollout label`, see pod-labels.ts) are
 * merged into its labels for the planner (priority and scatter strategies)
 * and the status, as long as the pod keeps the sandbox they were added to.
 */
import { LazypullError, toError } from '../errors';
import type { Logger } from '../util/json-log';
import { parseCloneSet } from './cloneset-spec';
import { applyLabelPatch, checkOwnedKeys, LABEL_CLONESET, LABEL_POD_NAME, LABEL_REVISION, type LabelChange, type LabelPatch } from './pod-labels';
import { diffTemplates, revisionHash } from './revision';
import { planRollout } from './rollout-planner';
import type { PodRecord, PodUpgrade, SetRecord, StateStore } from './state-store';
import { podReady, type CloneSetSpec, type PodRuntime, type PodState, type PodTemplate, type RolloutStatus } from './types';

/** Label every pod of a set carries, naming the set. */
export const CLONESET_LABEL = LABEL_CLONESET;

export interface ControllerOptions {
  runtime: PodRuntime;
  store: StateStore;
  log?: Logger;
  /** Reconcile at least this often (ms); default 500. */
  resyncMs?: number;
  /** Images pulled at once when a revision appears; default 2. */
  pullConcurrency?: number;
  /** Seconds containers get to stop when a pod is deleted; default 10. */
  terminationGracePeriodSeconds?: number;
  /** A pod blocked by a failure (e.g. a missing image) is tried again after this long (ms); default never (apply again to retry). */
  blockedRetryMs?: number;
}

export interface ContainerView {
  name: string;
  containerId: string;
  imageRef: string;
}

export interface PodView {
  name: string;
  ip: string;
  sandboxId: string;
  revision: string;
  ready: boolean;
  /** The pod's labels: its sandbox's, the ones added to it, its template's. */
  labels: Record<string, string>;
  containers: ContainerView[];
}

/** CloneSet-style status plus the pods. */
export interface CloneSetStatusView extends RolloutStatus {
  observedGeneration: number;
  paused: boolean;
  /** Pod name → why it is not being updated. */
  blocked: Record<string, string>;
  pods: PodView[];
}

export interface ReadyEntry {
  cloneset: string;
  name: string;
  ip: string;
  revision: string;
  ready: boolean;
}

export interface ApplyResult {
  name: string;
  updateRevision: string;
  generation: number;
  created: boolean;
}

/** The outcome of `rollout label`: a pod's labels after the change, or why nothing changed. */
export type LabelPodResult =
  | { outcome: 'unknownSet' }
  | { outcome: 'unknownPod' }
  | { outcome: 'conflict'; conflicts: LabelChange['conflicts'] }
  | { outcome: 'done'; cloneset: string; name: string; sandboxId: string; labels: Record<string, string>; result: LabelChange['result']; notFound: string[] };

interface Prewarm {
  revision: string;
  done: boolean;
  errors: Map<string, string>;
}

/** What the controller knows of a set in memory (rebuilt after a restart). */
interface SetState {
  observed: PodState[];
  /** When the listing behind `observed` began (ms since the epoch; 0: none yet). */
  listedAt: number;
  observedGeneration: number;
  busy: Map<string, Promise<void>>;
  /** Pod → reason and when. */
  blocked: Map<string, { reason: string; at: number }>;
  /** Pod → earliest time an interrupted step is tried again. */
  retryAt: Map<string, number>;
  status?: RolloutStatus;
  prewarm?: Prewarm;
  /** Tasks finished so far (a listing taken across one is not used to forget records). */
  finished: number;
  /**
   * Pods whose step ended after the listing in `observed` began. That
   * listing may show such a pod as it was before the step (a recreated
   * pod's old sandbox, with its ready containers), so until a newer listing
   * the pod does not count as ready.
   */
  unconfirmed: Set<string>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function message(err: unknown): string {
  return toError(err).message;
}

export class Controller {
  private readonly runtime: PodRuntime;
  private readonly store: StateStore;
  private readonly log: Logger;
  private readonly resyncMs: number;
  private readonly pullConcurrency: number;
  private readonly terminationGrace: number;
  private readonly blockedRetryMs: number;
  private readonly states = new Map<string, SetState>();
  private readonly pulled = new Set<string>();
  private readonly pulling = new Map<string, Promise<void>>();
  private readonly deletions = new Map<string, Promise<void>>();
  private stopped = false;
  private kicked = false;
  /**
   * Whether the next reconcile must list the pods: anything but a readiness
   * flip (a step ended, a spec changed, the resync timer) may have changed
   * what the runtime shows. A flip alone changes only what the probes say,
   * which the runtime can tell without a listing (PodRuntime.readinessNow).
   */
  private listNeeded = true;
  /** Followers of the status views (watch streams of the HTTP API). */
  private readonly changeListeners = new Set<() => void>();
  private changeScheduled = false;
  private wake: (() => void) | undefined;
  private loopDone: Promise<void> | undefined;

  constructor(opts: ControllerOptions) {
    this.runtime = opts.runtime;
    this.store = opts.store;
    this.log = opts.log ?? (() => undefined);
    this.resyncMs = opts.resyncMs ?? 500;
    this.pullConcurrency = Math.max(1, opts.pullConcurrency ?? 2);
    this.terminationGrace = opts.terminationGracePeriodSeconds ?? 10;
    this.blockedRetryMs = opts.blockedRetryMs ?? Number.POSITIVE_INFINITY;
    this.store.onCommit(() => this.changed());
  }

  /**
   * Call `listener` soon after anything a status view or ready set shows may
   * have changed (a record written, a listing taken, a step ended); calls are
   * coalesced per turn of the event loop. Returns the unsubscribe.
   */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  private changed(): void {
    if (this.changeScheduled || this.changeListeners.size === 0) return;
    this.changeScheduled = true;
    setImmediate(() => {
      this.changeScheduled = false;
      for (const listener of [...this.changeListeners]) listener();
    });
  }

  /** Load the stored sets, pre-warm their images, observe once, then keep reconciling. */
  async start(): Promise<void> {
    for (const rec of this.store.listSets()) {
      if (rec.deleting) this.startDeletion(rec.name);
      else this.startPrewarm(rec.name, rec.updateRevision);
    }
    await this.reconcileAll(true);
    this.loopDone = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loopDone;
    const pending = [...this.states.values()].flatMap((s) => [...s.busy.values()]);
    await Promise.allSettled([...pending, ...this.deletions.values()]);
  }

  /** Reconcile soon, from a fresh listing (an event: a task finished, a spec changed). */
  kick(): void {
    this.listNeeded = true;
    this.reconcileSoon();
  }

  /**
   * A container's readiness flipped (its probe passed or failed): reconcile
   * soon. The last listing serves, with the probes' verdicts of now, if it
   * is younger than the resync period: on an in-place update's critical
   * path this saves a listing between a probe's pass and the gate opening.
   */
  readinessChanged(): void {
    this.reconcileSoon();
  }

  private reconcileSoon(): void {
    this.kicked = true;
    this.wake?.();
    this.changed();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (!this.kicked) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.listNeeded = true;
            resolve();
          }, this.resyncMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
      this.kicked = false;
      if (this.stopped) break;
      const list = this.listNeeded;
      this.listNeeded = false;
      await this.reconcileAll(list);
    }
  }

  private async reconcileAll(list: boolean): Promise<void> {
    for (const rec of this.store.listSets()) {
      if (rec.deleting) continue;
      try {
        await this.reconcile(rec.name, list);
      } catch (err) {
        this.log({ level: 'warn', event: 'reconcile_failed', cloneset: rec.name, error: message(err) });
      }
    }
  }

  private state(name: string): SetState {
    let st = this.states.get(name);
    if (st === undefined) {
      st = { observed: [], listedAt: 0, observedGeneration: 0, busy: new Map(), blocked: new Map(), retryAt: new Map(), finished: 0, unconfirmed: new Set() };
      this.states.set(name, st);
    }
    return st;
  }

  private templateOf(set: string, revision: string): PodTemplate | undefined {
    return this.store.getRevision(set, revision)?.template;
  }

  private selector(rec: SetRecord): Record<string, string> {
    return { ...rec.spec.selector.matchLabels, [CLONESET_LABEL]: rec.name };
  }

  private podLabels(rec: SetRecord, template: PodTemplate): Record<string, string> {
    return { ...template.labels, ...rec.spec.selector.matchLabels, [CLONESET_LABEL]: rec.name };
  }

  // ------------------------------------------------------------------ API

  /** Apply a CloneSet YAML; a malformed one throws LAZYPULL_ERR_INVALID_ARGUMENT and changes nothing. */
  apply(text: string): ApplyResult {
    const spec: CloneSetSpec = parseCloneSet(text);
    const existing = this.store.getSet(spec.name);
    if (existing?.deleting) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `CloneSet ${spec.name} is being deleted; apply it again once it is gone`, { cloneset: spec.name });
    }
    const now = Date.now();
    const updateRevision = revisionHash(spec.template);
    const rec: SetRecord = {
      name: spec.name,
      spec,
      updateRevision,
      generation: (existing?.generation ?? 0) + 1,
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
    };
    this.store.putSet(rec, { set: spec.name, revision: updateRevision, template: spec.template, createdAt: now });
    const st = this.state(spec.name);
    st.blocked.clear();
    st.retryAt.clear();
    if (st.prewarm?.revision !== updateRevision) this.startPrewarm(spec.name, updateRevision);
    this.log({ event: 'applied', cloneset: spec.name, revision: updateRevision, generation: rec.generation, replicas: spec.replicas });
    this.kick();
    return { name: spec.name, updateRevision, generation: rec.generation, created: existing === undefined };
  }

  setPaused(name: string, paused: boolean): SetRecord | undefined {
    const rec = this.store.getSet(name);
    if (rec === undefined || rec.deleting) return undefined;
    const next: SetRecord = {
      ...rec,
      spec: { ...rec.spec, updateStrategy: { ...rec.spec.updateStrategy, paused } },
      generation: rec.generation + 1,
      updatedAt: Date.now(),
    };
    this.store.putSet(next);
    this.log({ event: paused ? 'paused' : 'resumed', cloneset: name });
    this.kick();
    return next;
  }

  /** Delete a set and its pods; resolves when they are gone. False for an unknown set. */
  async delete(name: string): Promise<boolean> {
    const rec = this.store.getSet(name);
    if (rec === undefined) return false;
    if (!rec.deleting) this.store.putSet({ ...rec, deleting: true, updatedAt: Date.now() });
    await this.startDeletion(name);
    return true;
  }

  private startDeletion(name: string): Promise<void> {
    let running = this.deletions.get(name);
    if (running === undefined) {
      running = (async () => {
        const st = this.state(name);
        await Promise.allSettled([...st.busy.values()]);
        const rec = this.store.getSet(name);
        if (rec === undefined) return;
        for (let attempt = 0; ; attempt++) {
          try {
            const pods = await this.runtime.listPods(this.selector(rec));
            await Promise.all(pods.map((p) => this.runtime.deletePod(p, this.terminationGrace)));
            break;
          } catch (err) {
            this.log({ level: 'warn', event: 'delete_failed', cloneset: name, error: message(err) });
            if (attempt >= 5) throw err;
            await sleep(1000);
          }
        }
        this.store.deleteSet(name);
        this.states.delete(name);
        this.log({ event: 'deleted', cloneset: name });
      })().finally(() => this.deletions.delete(name));
      this.deletions.set(name, running);
    }
    return running;
  }

  names(): string[] {
    return this.store.listSets().filter((r) => !r.deleting).map((r) => r.name);
  }

  get(name: string): { spec: CloneSetSpec; status: CloneSetStatusView; createdAt: number } | undefined {
    const rec = this.store.getSet(name);
    if (rec === undefined || rec.deleting) return undefined;
    return { spec: rec.spec, status: this.statusView(rec), createdAt: rec.createdAt };
  }

  /** Pods of a set with their readiness right now (the gate as stored this instant). */
  readySet(name: string): ReadyEntry[] | undefined {
    const rec = this.store.getSet(name);
    if (rec === undefined || rec.deleting) return undefined;
    return this.overlay(rec, this.state(name).observed).map((p) => ({ cloneset: name, name: p.name, ip: p.ip, revision: p.revision, ready: podReady(p) }));
  }

  /**
   * Change the labels added to a pod (kubectl label). Keys the CloneSet
   * decides, or malformed ones, throw LAZYPULL_ERR_INVALID_ARGUMENT.
   */
  async labelPod(set: string, pod: string, patch: LabelPatch, overwrite: boolean): Promise<LabelPodResult> {
    const before = this.store.getSet(set);
    if (before === undefined || before.deleting) return { outcome: 'unknownSet' };
    checkOwnedKeys(patch, before.spec.selector.matchLabels, before.spec.template.labels);
    // Asked of the runtime, not the last listing: the labels belong to the sandbox the pod runs in now.
    const live = await this.currentPod(set, pod);
    const rec = this.store.getSet(set);
    if (rec === undefined || rec.deleting) return { outcome: 'unknownSet' };
    if (live === undefined) return { outcome: 'unknownPod' };
    // No await from here on: read, change and write in one step.
    const stored = this.store.podLabels.get(set, pod);
    const change = applyLabelPatch(stored?.sandboxId === live.sandboxId ? stored.labels : {}, patch, overwrite);
    if (change.conflicts.length > 0) return { outcome: 'conflict', conflicts: change.conflicts };
    if (Object.keys(change.labels).length > 0) {
      this.store.podLabels.put({ set, name: pod, sandboxId: live.sandboxId, labels: change.labels, updatedAt: Date.now() });
    } else {
      this.store.podLabels.delete(set, pod);
    }
    this.log({ event: 'pod_labeled', cloneset: set, pod, sandboxId: live.sandboxId, labels: change.labels, result: change.result });
    this.kick();
    const [shown] = this.overlay(rec, [live]);
    return { outcome: 'done', cloneset: set, name: pod, sandboxId: live.sandboxId, labels: shown.labels, result: change.result, notFound: change.notFound };
  }

  allReady(): ReadyEntry[] {
    return this.names().flatMap((n) => this.readySet(n) ?? []);
  }

  private statusView(rec: SetRecord): CloneSetStatusView {
    const st = this.state(rec.name);
    const pods = this.overlay(rec, st.observed);
    // Counted from the pods shown, so that the counts and the pods agree (the gates as stored this instant, not as
    // at the last plan); the revision the set runs and why it is held come from the plan of the spec as applied now.
    const active = pods.filter((p) => !p.terminating);
    const planned = st.status !== undefined && st.observedGeneration === rec.generation ? st.status : undefined;
    const base: RolloutStatus = {
      replicas: active.length,
      readyReplicas: active.filter(podReady).length,
      updatedReplicas: active.filter((p) => p.revision === rec.updateRevision).length,
      updatedReadyReplicas: active.filter((p) => p.revision === rec.updateRevision && podReady(p)).length,
      updateRevision: rec.updateRevision,
      currentRevision: st.status?.currentRevision ?? rec.updateRevision,
      ...(planned?.message !== undefined ? { message: planned.message } : {}),
    };
    const blocked = Object.fromEntries([...st.blocked].map(([pod, b]) => [pod, b.reason]));
    let msg = base.message;
    if (msg === undefined && st.blocked.size > 0) {
      msg = `rollout blocked: ${[...st.blocked].map(([pod, b]) => `pod ${pod}: ${b.reason}`).join('; ')}`;
    }
    const prewarmErrors = st.prewarm?.revision === rec.updateRevision ? [...st.prewarm.errors] : [];
    if (msg === undefined && prewarmErrors.length > 0) msg = `pre-pull failed: ${prewarmErrors.map(([img, e]) => `${img}: ${e}`).join('; ')}`;
    return {
      ...base,
      updateRevision: rec.updateRevision,
      ...(msg !== undefined ? { message: msg } : {}),
      observedGeneration: st.observedGeneration,
      paused: rec.spec.updateStrategy.paused,
      blocked,
      pods: pods.map((p) => ({
        name: p.name,
        ip: p.ip,
        sandboxId: p.sandboxId,
        revision: p.revision,
        ready: podReady(p),
        labels: p.labels,
        containers: p.containers.map((c) => ({ name: c.name, containerId: c.containerId, imageRef: c.imageRef })),
      })),
    };
  }

  // ------------------------------------------------------------------ observation

  /** Labels added to the pod, if they belong to the sandbox it runs in. */
  private addedLabels(set: string, p: PodState): Record<string, string> {
    const r = this.store.podLabels.get(set, p.name);
    return r !== undefined && r.sandboxId === p.sandboxId ? r.labels : {};
  }

  /** The runtime's pods as the controller sees them: revision, labels and gate from its records. */
  private overlay(rec: SetRecord, observed: PodState[]): PodState[] {
    const byName = new Map<string, PodState>();
    for (const p of observed) {
      const other = byName.get(p.name);
      // Two sandboxes of one name (a recreate cut short): the live, newest one is the pod.
      if (other === undefined || (other.terminating && !p.terminating) || (other.terminating === p.terminating && p.createdAt > other.createdAt)) byName.set(p.name, p);
    }
    const unconfirmed = this.state(rec.name).unconfirmed;
    return [...byName.values()].map((p) => {
      const r = this.store.getPod(rec.name, p.name);
      const revision = r?.revision ?? p.revision;
      const template = this.templateOf(rec.name, revision);
      const complete = template === undefined || template.containers.every((c) => p.containers.some((x) => x.name === c.name));
      return {
        ...p,
        revision,
        // The template decides its keys; added labels fill in the rest.
        labels: { ...p.labels, ...this.addedLabels(rec.name, p), ...template?.labels, [LABEL_REVISION]: revision },
        // Its step ended after this listing began: the listing may show the pod as it was (SetState.unconfirmed).
        containersReady: p.containersReady && complete && !unconfirmed.has(p.name),
        inPlaceUpdateReady: r?.inPlaceUpdateReady ?? true,
        terminating: p.terminating || r?.upgrade?.phase === 'deleting' || r?.upgrade?.kind === 'delete',
      };
    });
  }

  private async reconcile(name: string, list: boolean): Promise<void> {
    let rec = this.store.getSet(name);
    if (rec === undefined || rec.deleting) return;
    const st = this.state(name);
    const finishedBefore = st.finished;
    const reused = !list && st.listedAt > 0 && Date.now() - st.listedAt <= this.resyncMs ? this.runtime.readinessNow?.(st.observed) : undefined;
    const listedAt = reused !== undefined ? st.listedAt : Date.now();
    const observed = reused ?? (await this.runtime.listPods(this.selector(rec)));
    // From here on nothing awaits until the actions are launched: the ready set changes in one step.
    rec = this.store.getSet(name);
    if (rec === undefined || rec.deleting || this.stopped) return;
    if (st.finished !== finishedBefore) {
      // A step ended while we looked: the listing may predate it (a pod just created would look missing). Look again.
      this.kick();
      return;
    }
    st.observed = observed;
    st.listedAt = listedAt;
    // A fresh listing is kept only if no step ended while it was taken (above): it shows every step's outcome.
    if (reused === undefined) st.unconfirmed.clear();
    const now = Date.now();
    for (const [pod, b] of st.blocked) if (now - b.at > this.blockedRetryMs) st.blocked.delete(pod);

    // Adopt pods without a record; forget records of pods that are gone (unless a step will make them).
    const names = new Set(observed.map((p) => p.name));
    for (const p of observed) {
      if (this.store.getPod(name, p.name) === undefined && !st.busy.has(p.name)) {
        this.store.putPod({ set: name, name: p.name, revision: p.revision, inPlaceUpdateReady: true, upgrades: 0, updatedAt: now });
      }
    }
    {
      for (const r of this.store.listPods(name)) {
        if (names.has(r.name) || st.busy.has(r.name)) continue;
        if (r.upgrade !== undefined && r.upgrade.phase !== 'verifying') continue;
        this.store.deletePod(name, r.name);
        this.log({ level: 'warn', event: 'pod_lost', cloneset: name, pod: r.name });
      }
    }

    // Added labels belong to a sandbox: once it is gone (pod deleted or recreated), so are they. Labels
    // written after this listing began may belong to a sandbox it does not show yet.
    const sandboxes = new Set(observed.map((p) => p.sandboxId));
    for (const l of this.store.podLabels.list(name)) {
      if (sandboxes.has(l.sandboxId) || l.updatedAt >= listedAt) continue;
      this.store.podLabels.delete(name, l.name);
      this.log({ event: 'pod_labels_dropped', cloneset: name, pod: l.name, sandboxId: l.sandboxId, labels: l.labels });
    }

    // Open the gate of pods whose new containers run, pass their probes and show a new image.
    for (const p of this.overlay(rec, observed)) {
      const r = this.store.getPod(name, p.name);
      if (r?.upgrade?.phase !== 'verifying' || st.busy.has(p.name)) continue;
      if (!this.upgradeVerified(p, r.upgrade)) continue;
      this.store.putPod({ ...r, inPlaceUpdateReady: true, upgrade: undefined, upgrades: r.upgrades + 1 });
      // The store is the controller's record (and serves the ready set); the runtime shows it on the pod.
      this.runtime.setInPlaceUpdateReady(p, true).catch((err: unknown) => {
        this.log({ level: 'warn', event: 'gate_not_shown', cloneset: name, pod: p.name, ready: true, error: message(err) });
      });
      this.log({ event: 'upgraded', cloneset: name, pod: p.name, from: r.upgrade.fromRevision, to: r.upgrade.toRevision, seconds: (Date.now() - r.upgrade.startedAt) / 1000 });
    }

    // Carry on with steps a previous run (or a failed attempt) left half done.
    for (const r of this.store.listPods(name)) {
      if (r.upgrade === undefined || r.upgrade.phase === 'verifying' || st.busy.has(r.name)) continue;
      if ((st.retryAt.get(r.name) ?? 0) > now) continue;
      this.launch(name, r.name, 'resume', () => this.continueUpgrade(name, r.name));
    }

    const pods = this.overlay(rec, observed);
    // A second sandbox under a pod's name (left by a crash): remove it.
    for (const p of observed) {
      if (st.busy.has(p.name) || pods.some((x) => x.sandboxId === p.sandboxId)) continue;
      const extra = `${p.name}#${p.sandboxId}`;
      if (st.busy.has(extra)) continue;
      this.log({ level: 'warn', event: 'duplicate_sandbox', cloneset: name, pod: p.name, sandboxId: p.sandboxId });
      this.launch(name, extra, 'delete duplicate', () => this.runtime.deletePod(p, this.terminationGrace));
    }
    // Pods whose sandbox died: remove them, the planner makes new ones.
    for (const p of pods) {
      if (p.terminating && !st.busy.has(p.name) && this.store.getPod(name, p.name)?.upgrade === undefined) {
        this.launch(name, p.name, 'delete', () => this.deleteTask(name, p.name));
      }
    }

    // Clean-ups of duplicate sandboxes (`pod#sandbox`) are not pods to the planner.
    const busy = new Set([...st.busy.keys()].filter((k) => !k.includes('#')));
    const spec = rec.spec;
    const plan = planRollout({
      spec,
      updateRevision: rec.updateRevision,
      templateOf: (revision) => this.templateOf(name, revision),
      // The planner counts busy pods as unavailable, whatever they show right now.
      pods,
      busy,
      blocked: new Map([...st.blocked].map(([pod, b]) => [pod, b.reason])),
      nameFor: (index) => `${name}-${index}`,
    });
    st.status = plan.status;
    st.observedGeneration = rec.generation;
    this.changed();
    const prewarmed = st.prewarm?.revision === rec.updateRevision && st.prewarm.done;
    const setRec = rec;
    for (const action of plan.actions) {
      const pod = action.kind === 'create' ? action.name : action.pod;
      if (st.busy.has(pod) || st.blocked.has(pod)) continue;
      // Nothing is touched before the new revision's images are on the node.
      if (!prewarmed && action.kind !== 'delete') continue;
      switch (action.kind) {
        case 'create':
          this.launch(name, pod, 'create', () => this.createTask(setRec, pod, action.revision));
          break;
        case 'delete':
          this.launch(name, pod, 'delete', () => this.deleteTask(name, pod));
          break;
        case 'updateInPlace':
          this.launch(name, pod, 'updateInPlace', () => this.inPlaceTask(setRec, pod, action.toRevision));
          break;
        case 'recreate':
          this.launch(name, pod, 'recreate', () => this.recreateTask(setRec, pod, action.toRevision));
          break;
      }
    }
  }

  private upgradeVerified(p: PodState, u: PodUpgrade): boolean {
    if (!p.containersReady) return false;
    return u.changed.every((n) => {
      const c = p.containers.find((x) => x.name === n);
      if (c === undefined || !c.running || !c.ready) return false;
      if (c.containerId === u.recordedContainerIds[n]) return false;
      const before = u.recordedImageRefs[n];
      return before === undefined || before === '' || c.imageRef !== before;
    });
  }

  // ------------------------------------------------------------------ tasks

  private launch(set: string, pod: string, what: string, task: () => Promise<void>): void {
    const st = this.state(set);
    const run = (async () => {
      try {
        await task();
        st.blocked.delete(pod);
        st.retryAt.delete(pod);
      } catch (err) {
        const reason = message(err);
        st.blocked.set(pod, { reason, at: Date.now() });
        st.retryAt.set(pod, Date.now() + 5000);
        this.log({ level: 'warn', event: 'step_failed', cloneset: set, pod, action: what, error: reason });
      } finally {
        st.busy.delete(pod);
        st.finished++;
        st.unconfirmed.add(pod);
        this.kick();
      }
    })();
    st.busy.set(pod, run);
  }

  private async ensurePulled(image: string): Promise<void> {
    if (this.pulled.has(image)) return;
    let p = this.pulling.get(image);
    if (p === undefined) {
      const started = Date.now();
      p = this.runtime
        .pullImage(image)
        .then((ref) => {
          this.pulled.add(image);
          this.log({ event: 'pulled', image, imageRef: ref, seconds: (Date.now() - started) / 1000 });
        })
        .catch((err: unknown) => {
          throw new LazypullError('LAZYPULL_ERR_CRI', `pull of ${image} failed: ${message(err)}`, { image }, { cause: err });
        })
        .finally(() => this.pulling.delete(image));
      this.pulling.set(image, p);
    }
    await p;
  }

  private async ensureImages(images: string[]): Promise<void> {
    for (const image of [...new Set(images)]) await this.ensurePulled(image);
  }

  private startPrewarm(set: string, revision: string): void {
    const template = this.templateOf(set, revision);
    const st = this.state(set);
    const pw: Prewarm = { revision, done: false, errors: new Map() };
    st.prewarm = pw;
    const queue = [...new Set((template?.containers ?? []).map((c) => c.image))];
    const started = Date.now();
    const worker = async (): Promise<void> => {
      for (let image = queue.shift(); image !== undefined; image = queue.shift()) {
        try {
          await this.ensurePulled(image);
        } catch (err) {
          pw.errors.set(image, message(err));
        }
      }
    };
    void Promise.all(Array.from({ length: this.pullConcurrency }, worker)).then(() => {
      pw.done = true;
      this.log({ event: 'prewarmed', cloneset: set, revision, seconds: (Date.now() - started) / 1000, failed: [...pw.errors.keys()] });
      this.kick();
    });
  }

  /** The pod as the last listing showed it, with the controller's records. */
  private observedPod(rec: SetRecord, pod: string): PodState | undefined {
    return this.overlay(rec, this.state(rec.name).observed).find((x) => x.name === pod);
  }

  /** The pod as the runtime shows it now (the live sandbox if there are several). */
  private async currentPod(set: string, pod: string): Promise<PodState | undefined> {
    const rec = this.store.getSet(set);
    if (rec === undefined) return undefined;
    // Selected by name too: a whole listing per step would cost a status call per pod of the set.
    const pods = (await this.runtime.listPods({ ...this.selector(rec), [LABEL_POD_NAME]: pod })).filter((p) => p.name === pod);
    return pods.find((p) => !p.terminating) ?? pods[0];
  }

  private requireTemplate(set: string, revision: string): PodTemplate {
    const t = this.templateOf(set, revision);
    if (t === undefined) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `revision ${revision} of ${set} is unknown`, { cloneset: set, revision });
    return t;
  }

  private async inPlaceTask(rec: SetRecord, pod: string, to: string): Promise<void> {
    const r = this.store.getPod(rec.name, pod);
    const p = this.observedPod(rec, pod);
    if (r === undefined || p === undefined) return;
    const toTemplate = this.requireTemplate(rec.name, to);
    const fromTemplate = this.templateOf(rec.name, r.revision);
    let changed: string[];
    if (fromTemplate !== undefined) {
      const diff = diffTemplates(fromTemplate, toTemplate);
      if (!diff.inPlacePossible) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `pod ${pod} cannot be updated in place: ${diff.reason ?? 'not only images changed'}`, { pod });
      changed = diff.changedContainers;
    } else {
      changed = toTemplate.containers.filter((c) => p.containers.find((x) => x.name === c.name)?.image !== c.image).map((c) => c.name);
    }
    // Pull first: a missing image blocks the pod before anything of it is touched.
    await this.ensureImages(toTemplate.containers.filter((c) => changed.includes(c.name)).map((c) => c.image));
    if (changed.length === 0) {
      this.store.putPod({ ...r, revision: to, inPlaceUpdateReady: true, upgrade: undefined, upgrades: r.upgrades + 1 });
      return;
    }
    const now = Date.now();
    const upgrade: PodUpgrade = {
      kind: 'inPlace',
      phase: 'gateClosed',
      fromRevision: r.revision,
      toRevision: to,
      changed,
      recordedImageRefs: Object.fromEntries(p.containers.map((c) => [c.name, c.imageRef])),
      recordedContainerIds: Object.fromEntries(p.containers.map((c) => [c.name, c.containerId])),
      gateClosedAt: now,
      startedAt: now,
    };
    this.store.putPod({ ...r, inPlaceUpdateReady: false, upgrade });
    this.log({ event: 'gate_closed', cloneset: rec.name, pod, from: r.revision, to, containers: changed });
    await this.continueUpgrade(rec.name, pod);
  }

  private async recreateTask(rec: SetRecord, pod: string, to: string): Promise<void> {
    const r = this.store.getPod(rec.name, pod);
    const p = this.observedPod(rec, pod);
    if (r === undefined || p === undefined) return;
    const toTemplate = this.requireTemplate(rec.name, to);
    await this.ensureImages(toTemplate.containers.map((c) => c.image));
    const now = Date.now();
    this.store.putPod({
      ...r,
      inPlaceUpdateReady: false,
      upgrade: {
        kind: 'recreate',
        phase: 'deleting',
        fromRevision: r.revision,
        toRevision: to,
        changed: [],
        recordedImageRefs: Object.fromEntries(p.containers.map((c) => [c.name, c.imageRef])),
        recordedContainerIds: Object.fromEntries(p.containers.map((c) => [c.name, c.containerId])),
        startedAt: now,
      },
    });
    this.log({ event: 'recreating', cloneset: rec.name, pod, from: r.revision, to });
    await this.continueUpgrade(rec.name, pod);
  }

  private async createTask(rec: SetRecord, pod: string, revision: string): Promise<void> {
    const template = this.requireTemplate(rec.name, revision);
    await this.ensureImages(template.containers.map((c) => c.image));
    const now = Date.now();
    this.store.putPod({
      set: rec.name,
      name: pod,
      revision,
      inPlaceUpdateReady: true,
      upgrades: 0,
      updatedAt: now,
      upgrade: { kind: 'create', phase: 'creating', toRevision: revision, changed: [], recordedImageRefs: {}, recordedContainerIds: {}, startedAt: now },
    });
    await this.continueUpgrade(rec.name, pod);
  }

  private async deleteTask(set: string, pod: string): Promise<void> {
    const now = Date.now();
    const r: PodRecord = this.store.getPod(set, pod) ?? { set, name: pod, revision: '', inPlaceUpdateReady: false, upgrades: 0, updatedAt: now };
    this.store.putPod({
      ...r,
      inPlaceUpdateReady: false,
      upgrade: { kind: 'delete', phase: 'deleting', toRevision: r.revision, changed: [], recordedImageRefs: {}, recordedContainerIds: {}, startedAt: now },
    });
    await this.continueUpgrade(set, pod);
  }

  /** Take the stored step of a pod's upgrade, and the ones after it, each stored before it is taken. */
  private async continueUpgrade(set: string, pod: string): Promise<void> {
    for (;;) {
      const rec = this.store.getSet(set);
      const r = this.store.getPod(set, pod);
      const u = r?.upgrade;
      if (rec === undefined || rec.deleting || r === undefined || u === undefined || this.stopped) return;
      switch (u.phase) {
        case 'verifying':
          return;
        case 'gateClosed': {
          // On the pod too (again after a restart: both calls are idempotent), before the grace period runs.
          const seen = this.observedPod(rec, pod);
          if (seen !== undefined) {
            await this.runtime.setInPlaceUpdateReady(seen, false);
            await this.runtime.recordInPlaceUpdateState(seen, { revision: u.toRevision, recordedImageRefs: u.recordedImageRefs, updateTimestamp: u.startedAt });
          }
          const grace = rec.spec.updateStrategy.inPlaceUpdateStrategy.gracePeriodSeconds;
          const wait = (u.gateClosedAt ?? 0) + grace * 1000 - Date.now();
          if (wait > 0) await sleep(wait);
          const now = this.store.getSet(set);
          const latest = this.store.getPod(set, pod);
          if (now === undefined || now.deleting || latest?.upgrade?.phase !== 'gateClosed') return;
          if (now.updateRevision === u.fromRevision) {
            // Rolled back during the grace period: nothing was replaced, the pod serves again as it was.
            this.store.putPod({ ...latest, inPlaceUpdateReady: true, upgrade: undefined });
            if (seen !== undefined) await this.runtime.setInPlaceUpdateReady(seen, true);
            this.log({ event: 'upgrade_cancelled', cloneset: set, pod, to: u.toRevision });
            return;
          }
          this.store.putPod({ ...latest, upgrade: { ...latest.upgrade, phase: 'replacing' } });
          break;
        }
        case 'replacing': {
          // The listing this step was planned on names the sandbox (only this task changes the pod); the runtime
          // lists the sandbox's containers itself. Asking the runtime for the whole set again would cost a listing
          // on every update's critical path.
          const p = this.observedPod(rec, pod) ?? (await this.currentPod(set, pod));
          if (p === undefined) {
            this.store.deletePod(set, pod);
            return;
          }
          const template = this.requireTemplate(set, u.toRevision);
          this.log({ event: 'replacing_containers', cloneset: set, pod, to: u.toRevision, containers: u.changed });
          try {
            await this.runtime.updateContainersInPlace(p, template, u.changed, u.toRevision);
          } catch (err) {
            // Nothing replaced yet (a pull or create failed): the pod goes back to serving as it was.
            const now = await this.currentPod(set, pod).then(
              (found) => ({ found }),
              () => undefined, // the runtime did not answer: whether the pod is untouched is unknown
            );
            if (now !== undefined && now.found === undefined) {
              // The pod went away meanwhile: nothing to update, the planner makes it anew.
              this.store.deletePod(set, pod);
              this.log({ level: 'warn', event: 'pod_lost', cloneset: set, pod });
              return;
            }
            const current = now?.found;
            const untouched = current !== undefined && u.changed.every((n) => current.containers.some((c) => c.name === n && c.containerId === u.recordedContainerIds[n] && c.running));
            if (untouched) {
              this.store.putPod({ ...r, inPlaceUpdateReady: true, upgrade: undefined });
              // The failure that stopped the update is the one to report.
              await this.runtime.setInPlaceUpdateReady(current, true).catch(() => undefined);
            }
            throw err;
          }
          this.store.putPod({ ...r, revision: u.toRevision, upgrade: { ...u, phase: 'verifying' } });
          this.log({ event: 'containers_replaced', cloneset: set, pod, to: u.toRevision, containers: u.changed, seconds: (Date.now() - u.startedAt) / 1000 });
          return;
        }
        case 'deleting': {
          const p = await this.currentPod(set, pod);
          if (p !== undefined) await this.runtime.deletePod(p, this.terminationGrace);
          if (u.kind === 'delete') {
            this.store.deletePod(set, pod);
            this.log({ event: 'pod_deleted', cloneset: set, pod });
            return;
          }
          this.store.putPod({ ...r, upgrade: { ...u, phase: 'creating' } });
          break;
        }
        case 'creating': {
          const template = this.requireTemplate(set, u.toRevision);
          const existing = await this.currentPod(set, pod);
          const whole = existing !== undefined && !existing.terminating && template.containers.every((c) => existing.containers.some((x) => x.name === c.name && x.running));
          if (!whole) {
            // Half made before a crash: start over.
            if (existing !== undefined) await this.runtime.deletePod(existing, 0);
            await this.runtime.createPod(pod, template, u.toRevision, this.podLabels(rec, template));
          }
          this.store.putPod({ ...r, revision: u.toRevision, inPlaceUpdateReady: true, upgrade: undefined, upgrades: r.upgrades + (u.kind === 'recreate' ? 1 : 0) });
          this.log({ event: u.kind === 'recreate' ? 'recreated' : 'pod_created', cloneset: set, pod, revision: u.toRevision, seconds: (Date.now() - u.startedAt) / 1000 });
          return;
        }
      }
    }
  }
}
