/**
 * Where a rollout's time went, read from the controller's JSON log (one
 * event a line, each with its time): when the apply landed, when the new
 * image was on the node (pre-warm), when the first pod was touched, when the
 * last pod had its new containers (in place) or its new sandbox (recreate).
 * Seconds since the start of the measurement.
 */

interface LogEvent {
  time?: string;
  event?: string;
  revision?: string;
  to?: string;
  image?: string;
  seconds?: number;
}

export interface RolloutTimeline {
  /** The controller stored the new spec. */
  applied?: number;
  /** The new revision's image was pulled on the node (CRI PullImage). */
  prewarmed?: number;
  /** How long the pre-warm pull itself took. */
  pullSeconds?: number;
  /** The first pod's update began (gate closed, or recreate began). */
  firstTouched?: number;
  /** The last pod got its new containers (in place) or was created again (recreate). */
  lastReplaced?: number;
  /** Per pod, from the start of its update to its new containers running (`containers_replaced`/`recreated` seconds). */
  replaceSeconds: number[];
  /** Per pod updated in place, from the start of its update to its gate opening again, its new containers ready (`upgraded` seconds). */
  upgradeSeconds: number[];
}

function parseLog(text: string): LogEvent[] {
  const events: LogEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      events.push(JSON.parse(line) as LogEvent);
    } catch {
      // a line cut short by the kill
    }
  }
  return events;
}

/** The timeline of the rollout to `revision` (image `image`), relative to `startMs` (ms since the epoch). */
export function rolloutTimeline(log: string, revision: string, image: string, startMs: number): RolloutTimeline {
  const events = parseLog(log).filter((e) => e.time !== undefined && Date.parse(e.time) >= startMs - 1000);
  const at = (e: LogEvent): number => (Date.parse(e.time!) - startMs) / 1000;
  const first = (pred: (e: LogEvent) => boolean): number | undefined => {
    const e = events.find(pred);
    return e === undefined ? undefined : at(e);
  };
  const touched = events.filter((e) => (e.event === 'gate_closed' || e.event === 'recreating') && e.to === revision);
  const replaced = events.filter((e) => (e.event === 'containers_replaced' && e.to === revision) || (e.event === 'recreated' && e.revision === revision));
  const pulled = events.find((e) => e.event === 'pulled' && e.image === image);
  return {
    applied: first((e) => e.event === 'applied' && e.revision === revision),
    prewarmed: first((e) => e.event === 'prewarmed' && e.revision === revision),
    pullSeconds: pulled?.seconds,
    firstTouched: touched.length > 0 ? Math.min(...touched.map(at)) : undefined,
    lastReplaced: replaced.length > 0 ? Math.max(...replaced.map(at)) : undefined,
    replaceSeconds: replaced.map((e) => e.seconds ?? NaN).filter((s) => !Number.isNaN(s)),
    upgradeSeconds: events.filter((e) => e.event === 'upgraded' && e.to === revision).map((e) => e.seconds ?? NaN).filter((s) => !Number.isNaN(s)),
  };
}
