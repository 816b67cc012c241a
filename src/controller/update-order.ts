/**
 * The order in which pods are updated, after CloneSet: pods re-sorted by
 * `priorityStrategy`, then spread by `scatterStrategy`. Pure functions of
 * pod labels; the caller supplies the default order (by name).
 */
import type { PriorityStrategy, ScatterStrategy } from './types';

export interface OrderablePod {
  name: string;
  labels: Record<string, string>;
}

/** Sum of the weights of the `weightPriority` terms whose matchLabels the labels satisfy. */
export function weightOf(strategy: PriorityStrategy, labels: Record<string, string>): number {
  let weight = 0;
  for (const term of strategy.weightPriority ?? []) {
    const match = Object.entries(term.matchSelector.matchLabels).every(([k, v]) => labels[k] === v);
    if (match) weight += term.weight;
  }
  return weight;
}

/**
 * The integer at the end of a label value, as Kruise reads an `orderedKey`
 * ("5" -> 5, "sts-10" -> 10, "abc" -> 0).
 */
export function orderValue(value: string): number {
  const m = /[0-9]+$/.exec(value);
  if (!m) return 0;
  const n = Number(m[0]);
  return Number.isSafeInteger(n) ? n : 0;
}

/**
 * Priority of a pod under `orderPriority`: the index of the first listed key
 * the pod has (earlier keys go first) and that label's integer. Pods with
 * none of the keys get level -1: as in Kruise's own sort, they go first.
 */
function orderKeyOf(strategy: PriorityStrategy, labels: Record<string, string>): { level: number; order: number } {
  const terms = strategy.orderPriority ?? [];
  for (let i = 0; i < terms.length; i++) {
    const value = labels[terms[i].orderedKey];
    if (value !== undefined) return { level: i, order: orderValue(value) };
  }
  return { level: -1, order: 0 };
}

/**
 * Stable sort by priority. `weightPriority`: higher total weight first.
 * `orderPriority` (as Kruise sorts, not as its docs might suggest): pods
 * without any of the keys first, then pods with the first key before pods
 * with only the second, and so on; within a key, larger integer first.
 * Ties keep their incoming order.
 */
export function sortByPriority<T extends OrderablePod>(pods: T[], strategy: PriorityStrategy | undefined): T[] {
  if (!strategy) return [...pods];
  if (strategy.weightPriority && strategy.weightPriority.length > 0) {
    const weights = new Map(pods.map((p) => [p.name, weightOf(strategy, p.labels)]));
    return stableSort(pods, (a, b) => weights.get(b.name)! - weights.get(a.name)!);
  }
  if (strategy.orderPriority && strategy.orderPriority.length > 0) {
    const keys = new Map(pods.map((p) => [p.name, orderKeyOf(strategy, p.labels)]));
    return stableSort(pods, (a, b) => {
      const ka = keys.get(a.name)!;
      const kb = keys.get(b.name)!;
      if (ka.level !== kb.level) return ka.level < kb.level ? -1 : 1;
      return kb.order - ka.order;
    });
  }
  return [...pods];
}

/**
 * Spread pods matching each scatter term (`key=value`) over the update
 * order, so they are not updated together, with Kruise's algorithm: the
 * matched pods are dealt into groups interleaved with the unmatched ones, at
 * the density they have in the whole set (`all`), and the last matched pod
 * goes last. With 10 pods of which 3 match, they become the 1st, 6th and
 * 10th. Terms are applied most-matched first; a term with fewer than two
 * matched or two unmatched candidates changes nothing.
 *
 * @param candidates pods to order (already in priority order)
 * @param all every pod of the set (for the density), candidates included
 */
export function scatter<T extends OrderablePod>(candidates: T[], strategy: ScatterStrategy | undefined, all: OrderablePod[]): T[] {
  if (!strategy || strategy.length === 0 || candidates.length <= 1) return [...candidates];
  let order = [...candidates];
  for (const term of scatterTerms(candidates, strategy)) {
    order = scatterByTerm(order, term, all);
  }
  return order;
}

function scatterTerms(candidates: OrderablePod[], strategy: ScatterStrategy): ScatterStrategy {
  if (strategy.length === 1) return strategy;
  const counted = strategy
    .map((term, index) => ({ term, index, count: candidates.filter((p) => p.labels[term.key] === term.value).length }))
    .filter((t) => t.count > 0);
  counted.sort((a, b) => b.count - a.count || a.index - b.index);
  return counted.map((t) => t.term);
}

function scatterByTerm<T extends OrderablePod>(order: T[], term: { key: string; value: string }, all: OrderablePod[]): T[] {
  const matches = (p: OrderablePod): boolean => p.labels[term.key] === term.value;
  let matched = order.filter(matches);
  let unmatched = order.filter((p) => !matches(p));
  if (matched.length <= 1 || unmatched.length <= 1) return order;

  let totalMatched = all.filter(matches).length;
  const totalUnmatched = all.length - totalMatched;

  const last = matched[matched.length - 1];
  matched = matched.slice(0, -1);
  totalMatched--;

  const group = groupByDensity(totalMatched, totalUnmatched, matched.length, unmatched.length);
  const out: T[] = [];
  if (group.unmatchedRemainder > 0) {
    out.push(...unmatched.slice(0, group.unmatchedRemainder));
    unmatched = unmatched.slice(group.unmatchedRemainder);
  }
  for (let i = 0; i < group.groupNum; i++) {
    out.push(...matched.slice(0, group.matchedGroupSize));
    matched = matched.slice(group.matchedGroupSize);
    out.push(...unmatched.slice(0, group.unmatchedGroupSize));
    unmatched = unmatched.slice(group.unmatchedGroupSize);
  }
  out.push(...matched, ...unmatched, last);
  return out;
}

interface ScatterGroup {
  groupNum: number;
  matchedGroupSize: number;
  unmatchedGroupSize: number;
  unmatchedRemainder: number;
}

function evenGroups(matched: number, unmatched: number): ScatterGroup {
  const groupNum = Math.min(matched, unmatched);
  return {
    groupNum,
    matchedGroupSize: Math.round(matched / groupNum),
    unmatchedGroupSize: Math.round(unmatched / groupNum),
    unmatchedRemainder: 0,
  };
}

/**
 * Group sizes for the candidates: their own even split when they are at
 * least as dense in unmatched pods as the whole set, otherwise the whole
 * set's group sizes, with the surplus unmatched candidates going first.
 */
function groupByDensity(totalMatched: number, totalUnmatched: number, updateMatched: number, updateUnmatched: number): ScatterGroup {
  const update = evenGroups(updateMatched, updateUnmatched);
  if (totalMatched <= 0 || totalUnmatched / totalMatched >= updateUnmatched / updateMatched) return update;
  const total = evenGroups(totalMatched, totalUnmatched);
  const groupNum = Math.min(Math.floor(updateMatched / total.matchedGroupSize), Math.floor(updateUnmatched / total.unmatchedGroupSize));
  return {
    groupNum,
    matchedGroupSize: total.matchedGroupSize,
    unmatchedGroupSize: total.unmatchedGroupSize,
    unmatchedRemainder: updateUnmatched - groupNum * total.unmatchedGroupSize,
  };
}

function stableSort<T>(items: T[], compare: (a: T, b: T) => number): T[] {
  return items
    .map((item, index) => ({ item, index }))
    .sort((a, b) => compare(a.item, b.item) || a.index - b.index)
    .map((x) => x.item);
}
