/**
 * The rollout planner: given a CloneSet spec and the pods as observed, which
 * pods to create, delete or update next, and the CloneSet status. Pure and
 * runtime-independent: the CRI adapter and a future Kubernetes adapter both
 * carry out the same plan. The controller calls it again after every change
 * it observes; each call plans one step.
 *
 * Semantics follow OpenKruise's CloneSet (`calculateDiffsWithExpectation`,
 * scale and update in its cloneset controller):
 * - One step either scales (create/delete) or updates, never both, so the
 *   numbers each half relies on are never stale.
 * - `partition` pods stay on an old revision; `replicas - partition` are
 *   brought to the update revision.
 * - Ready pods are only taken down (updated or deleted) while the pods that
 *   stay available number at least `replicas - maxUnavailable`; pods that are
 *   already unavailable can be updated at no cost. Busy pods, missing pods
 *   and not-ready pods are all unavailable.
 * - Update order: by name, re-sorted by `priorityStrategy`, spread by
 *   `scatterStrategy`, computed over all pods of the set so that it holds
 *   across rounds (`maxUnavailable: 1` updates exactly in that order).
 * - `maxSurge` extra pods at the update revision are created while old pods
 *   remain to be updated, and removed (old ones first) when they are done.
 */
import { resolveIntOrPercent, resolvePartition } from './int-or-percent';
import { diffTemplates } from './revision';
import { podReady } from './types';
import type { CloneSetSpec, PodState, PodTemplate, RolloutAction, RolloutStatus } from './types';
import { scatter, sortByPriority } from './update-order';
import { LazypullError } from '../errors';

export interface PlanInput {
  spec: CloneSetSpec;
  /** Hash of spec.template. */
  updateRevision: string;
  /** Template of a revision the controller knows (for in-place decisions); undefined if unknown. */
  templateOf(revision: string): PodTemplate | undefined;
  /** All pods of the set (incl. terminating), states as observed. */
  pods: PodState[];
  /**
   * Pods with an operation in flight (being created, updated in place,
   * recreated, deleted): count as unavailable, never get a second action. A
   * busy name that is not an active pod (not listed yet, or listed as
   * terminating) is counted as a pod that may still come (at the update
   * revision) before anything is created, so nothing is created twice; and
   * only idle pods are counted before anything is deleted. While operations
   * are in flight the planner thus errs on doing less, never more.
   */
  busy: Set<string>;
  /** Pods whose last update failed and must not be retried automatically (e.g. image missing): they keep their old containers. */
  blocked: Map<string, string>;
  /**
   * Name for a new pod. The planner tries index 0, 1, 2, ... and skips names
   * already used by a pod or a busy operation, so `${set}-${index}` and a
   * random suffix both work.
   */
  nameFor(index: number): string;
  /**
   * The revision the set ran before the current update (CloneSet's
   * `status.currentRevision`), if the controller remembers it; otherwise the
   * most common old revision among the pods is used.
   */
  currentRevision?: string;
}

export interface Plan {
  actions: RolloutAction[];
  status: RolloutStatus;
  /** Pods meant to reach the update revision (`replicas - partition`); the rollout is complete when updatedReadyReplicas reaches it. */
  expectedUpdatedReplicas: number;
}

/** The rollout knobs as numbers for the current replicas, as Kruise computes them. */
export interface RolloutLimits {
  /** Pods to keep on old revisions. */
  partition: number;
  /** Extra pods allowed during an update (0 while paused). */
  maxSurge: number;
  /** Pods allowed to be unavailable. A percentage rounds up when maxSurge is 0, down otherwise. */
  maxUnavailable: number;
}

export function resolveRolloutLimits(spec: CloneSetSpec): RolloutLimits {
  const { replicas, updateStrategy: u } = spec;
  const maxSurge = u.paused ? 0 : resolveIntOrPercent(u.maxSurge, replicas, true);
  return {
    partition: resolvePartition(u.partition, replicas),
    maxSurge,
    maxUnavailable: resolveIntOrPercent(u.maxUnavailable, replicas, maxSurge === 0),
  };
}

export function planRollout(input: PlanInput): Plan {
  const { spec, updateRevision, busy, blocked } = input;
  const replicas = spec.replicas;
  const limits = resolveRolloutLimits(spec);
  const { partition, maxUnavailable } = limits;

  const active = input.pods.filter((p) => !p.terminating);
  const activeNames = new Set(active.map((p) => p.name));
  // Busy names without an active pod: pods on their way in (being created, or
  // recreated while the old sandbox terminates) - or on their way out. Counted
  // when deciding to create (so nothing is created twice), not when deleting.
  const pending = [...busy].filter((name) => !activeNames.has(name)).length;
  const isUpdated = (p: PodState): boolean => p.revision === updateRevision;
  const available = (p: PodState): boolean => podReady(p) && !busy.has(p.name);

  const oldPods = active.filter((p) => !isUpdated(p));
  const oldBusy = oldPods.filter((p) => busy.has(p.name)).length;
  // Old pods with an operation in flight are on their way to the update revision (or out).
  const oldCount = oldPods.length - oldBusy;
  const newCount = active.length - oldPods.length + pending + oldBusy;

  const oldDiff = Math.max(oldCount - partition, 0);
  const newDiff = Math.min(newCount - (replicas - partition), 0);
  const surge = limits.maxSurge > 0 && oldDiff > 0 && newDiff < 0 ? Math.min(limits.maxSurge, oldDiff, -newDiff) : 0;
  const expectedTotal = replicas + surge;
  const minAvailable = replicas - maxUnavailable;
  let availableNow = active.filter(available).length;

  const currentRevision = pickCurrentRevision(oldPods, updateRevision, input.currentRevision);
  const status: RolloutStatus = {
    replicas: active.length,
    readyReplicas: active.filter(podReady).length,
    updatedReplicas: active.length - oldPods.length,
    updatedReadyReplicas: active.filter((p) => isUpdated(p) && podReady(p)).length,
    updateRevision,
    currentRevision,
  };
  // Why updates are held, said on every plan (scaling goes on regardless).
  const updateNum = Math.min(oldDiff, -newDiff);
  const stuck = oldPods.filter((p) => blocked.has(p.name));
  let hold: string | undefined;
  if (updateNum > 0 && spec.updateStrategy.paused) {
    hold = `updates are paused (spec.updateStrategy.paused): ${oldPods.length} pod(s) remain on old revisions`;
  } else if (updateNum > 0 && stuck.length > 0) {
    const why = stuck.map((p) => `pod ${JSON.stringify(p.name)}: ${blocked.get(p.name)}`).join('; ');
    hold = `rollout stopped: ${why} (the pod keeps its old containers; apply a corrected spec to continue)`;
  }
  const plan = (actions: RolloutAction[], messages: string[] = []): Plan => {
    const all = hold ? [hold, ...messages] : messages;
    if (all.length > 0) status.message = all.join('; ');
    return { actions, status, expectedUpdatedReplicas: replicas - partition };
  };

  // ---- scale up: missing pods (and surge) ----
  const upperTotal = active.length + pending;
  if (upperTotal < expectedTotal) {
    const count = expectedTotal - upperTotal;
    // While fewer old pods exist than the partition keeps, CloneSet creates them at the current revision.
    const oldRevision = input.currentRevision ?? currentRevision;
    const canCreateOld = oldRevision !== updateRevision && input.templateOf(oldRevision) !== undefined;
    const oldCreations = canCreateOld ? Math.min(count, Math.max(partition - oldPods.length, 0)) : 0;
    const names = freeNames(count, input);
    const actions: RolloutAction[] = names.map((name, i) => ({
      kind: 'create',
      name,
      revision: i < oldCreations ? oldRevision : updateRevision,
    }));
    return plan(actions);
  }

  // ---- scale down: extra pods (and surge no longer needed) ----
  const idle = active.filter((p) => !busy.has(p.name));
  const excess = idle.length - expectedTotal;
  if (excess > 0) {
    const idleOld = sortForDeletion(idle.filter((p) => !isUpdated(p)), available);
    const idleNew = sortForDeletion(idle.filter(isUpdated), available);
    const oldFirst = Math.min(excess, Math.max(idleOld.length - partition, 0));
    const chosen = [...idleOld.slice(0, oldFirst), ...idleNew, ...idleOld.slice(oldFirst)].slice(0, excess);
    const actions: RolloutAction[] = [];
    for (const pod of chosen) {
      if (available(pod)) {
        if (availableNow - 1 < minAvailable) continue;
        availableNow--;
      }
      actions.push({ kind: 'delete', pod: pod.name });
    }
    if (actions.length > 0) return plan(actions);
  }

  // ---- update ----
  if (updateNum <= 0 || hold) return plan([]);

  // The update order is computed over the whole set, not just the pods still
  // to update, so it does not shift as pods are updated round after round.
  const byName = [...active].sort((a, b) => compareNames(a.name, b.name));
  const order = scatter(sortByPriority(byName, spec.updateStrategy.priorityStrategy), spec.updateStrategy.scatterStrategy, active);
  const candidates = order.filter((p) => !isUpdated(p) && !busy.has(p.name));

  const actions: RolloutAction[] = [];
  const refused: string[] = [];
  let waitingFor: PodState | undefined;
  for (const pod of candidates) {
    if (actions.length >= updateNum) break;
    const decision = decide(pod, input);
    if (decision.kind === 'refuse') {
      refused.push(`pod ${JSON.stringify(pod.name)}: ${decision.reason}`);
      continue;
    }
    if (available(pod)) {
      // Taking down a serving pod must leave replicas - maxUnavailable serving.
      // Later serving pods wait too (order is kept); pods already unavailable
      // further on may still be updated, at no cost.
      if (availableNow - 1 < minAvailable) {
        waitingFor ??= pod;
        continue;
      }
      availableNow--;
    }
    actions.push(decision.kind === 'inPlace'
      ? { kind: 'updateInPlace', pod: pod.name, toRevision: updateRevision }
      : { kind: 'recreate', pod: pod.name, toRevision: updateRevision });
  }
  const messages: string[] = [];
  if (refused.length > 0) {
    messages.push(`updateStrategy.type is InPlaceOnly but ${refused.length} pod(s) cannot be updated in place: ${refused.join('; ')}`);
  }
  if (waitingFor && actions.length === 0 && busy.size === 0) {
    const unavailable = active.filter((p) => !available(p)).map((p) => p.name);
    const missing = Math.max(replicas - active.length, 0);
    const what = [unavailable.length > 0 ? `not ready: ${unavailable.join(', ')}` : '', missing > 0 ? `${missing} missing` : '']
      .filter(Boolean)
      .join(', ');
    messages.push(`waiting for pods to become ready before updating ${JSON.stringify(waitingFor.name)}: maxUnavailable is ${maxUnavailable}${what ? ` (${what})` : ''}`);
  }
  return plan(actions, messages);
}

type Decision = { kind: 'inPlace' } | { kind: 'recreate' } | { kind: 'refuse'; reason: string };

function decide(pod: PodState, input: PlanInput): Decision {
  const type = input.spec.updateStrategy.type;
  if (type === 'ReCreate') return { kind: 'recreate' };
  const from = input.templateOf(pod.revision);
  if (!from) {
    if (type === 'InPlaceOnly') return { kind: 'refuse', reason: `the template of its revision ${JSON.stringify(pod.revision)} is unknown` };
    return { kind: 'recreate' };
  }
  const diff = diffTemplates(from, input.spec.template);
  if (diff.inPlacePossible) return { kind: 'inPlace' };
  if (type === 'InPlaceOnly') return { kind: 'refuse', reason: diff.reason ?? 'the template changed beyond container images' };
  return { kind: 'recreate' };
}

/**
 * CloneSet's `status.currentRevision`: the revision the set is moving away
 * from. The most common revision among old pods (ties go to the one the
 * controller remembers, then the smallest), or the update revision once no
 * old pod is left.
 */
function pickCurrentRevision(oldPods: PodState[], updateRevision: string, remembered: string | undefined): string {
  if (oldPods.length === 0) return updateRevision;
  const counts = new Map<string, number>();
  for (const p of oldPods) counts.set(p.revision, (counts.get(p.revision) ?? 0) + 1);
  let best: string | undefined;
  let bestCount = -1;
  for (const [revision, count] of [...counts].sort(([a], [b]) => compareNames(a, b))) {
    if (count > bestCount || (count === bestCount && revision === remembered)) {
      best = revision;
      bestCount = count;
    }
  }
  return best ?? updateRevision;
}

/** Deletion preference within a revision: unavailable first, then the newest, then the highest name. */
function sortForDeletion(pods: PodState[], available: (p: PodState) => boolean): PodState[] {
  return [...pods].sort(
    (a, b) => Number(available(a)) - Number(available(b)) || b.createdAt - a.createdAt || compareNames(b.name, a.name),
  );
}

/** Names in natural order, so "web-2" sorts before "web-10". */
function compareNames(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

function freeNames(count: number, input: PlanInput): string[] {
  const taken = new Set<string>([...input.pods.map((p) => p.name), ...input.busy]);
  const names: string[] = [];
  const limit = taken.size + count + 1000;
  for (let index = 0; names.length < count; index++) {
    if (index > limit) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `nameFor returned no unused pod name after ${limit} tries`, { count });
    }
    const name = input.nameFor(index);
    if (!taken.has(name)) {
      taken.add(name);
      names.push(name);
    }
  }
  return names;
}
