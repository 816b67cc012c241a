/**
 * Kubernetes' IntOrString for rollout knobs: a non-negative int, or a
 * percentage string ("20%") scaled against a total (the desired replicas).
 * Pure: no I/O, no knowledge of pods.
 */
import { LazypullError } from '../errors';
import type { IntOrPercent } from './types';

const PERCENT = /^(0|[1-9][0-9]*)%$/;

/** True for an int >= 0 or a string "N%" (N a non-negative integer, no sign, no spaces). */
export function isIntOrPercent(value: unknown): value is IntOrPercent {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0;
  return typeof value === 'string' && PERCENT.test(value);
}

/** The N of "N%", or undefined for an int. Throws on anything else. */
export function percentOf(value: IntOrPercent): number | undefined {
  if (typeof value === 'number') {
    check(value);
    return undefined;
  }
  check(value);
  return Number(value.slice(0, -1));
}

/**
 * The absolute number for `value` against `total`: an int is returned as is;
 * "N%" is N% of total, rounded up (`roundUp`) or down, as Kubernetes'
 * `GetScaledValueFromIntOrPercent`.
 */
export function resolveIntOrPercent(value: IntOrPercent, total: number, roundUp: boolean): number {
  const percent = percentOf(value);
  if (percent === undefined) return value as number;
  // percent * total is an exact integer; dividing by 100 only matters for rounding.
  const scaled = (percent * total) / 100;
  return roundUp ? Math.ceil(scaled) : Math.floor(scaled);
}

/**
 * CloneSet's partition (pods kept on the old revision) as a number, after
 * Kruise's `CalculatePartitionReplicas`: a percentage rounds up (so any
 * partition above "0%" keeps at least one old pod), a percentage below
 * "100%" still updates at least one pod when there is more than one
 * replica, and the result is clamped to [0, replicas].
 */
export function resolvePartition(partition: IntOrPercent, replicas: number): number {
  let value = resolveIntOrPercent(partition, replicas, true);
  if (typeof partition === 'string' && partition !== '100%' && replicas > 1 && value >= replicas) {
    value = replicas - 1;
  }
  return Math.max(0, Math.min(value, replicas));
}

function check(value: IntOrPercent): void {
  if (!isIntOrPercent(value)) {
    throw new LazypullError(
      'LAZYPULL_ERR_INVALID_ARGUMENT',
      `${JSON.stringify(value)}: must be an int >= 0 or a percentage like "20%"`,
      { value: String(value) },
    );
  }
}
