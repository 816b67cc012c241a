/**
 * A latency histogram a process can write into its status file and another
 * process can sum and serve as a Prometheus histogram: the layer servers
 * time their registry reads, the snapshotter daemon exports them. Plain
 * data (bucket bounds and counts), so it survives JSON.
 */

/** Upper bounds in seconds, as Prometheus `le` labels: loopback reads take ms, a slow registry seconds. */
export const FETCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface HistogramData {
  /** Upper bounds of the buckets, ascending (seconds). */
  bounds: number[];
  /** Observations per bucket, not cumulative; one more than bounds (the last is above every bound). */
  counts: number[];
  sum: number;
  count: number;
}

export class LatencyHistogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(private readonly bounds: number[] = FETCH_SECONDS_BUCKETS) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(seconds: number): void {
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += seconds;
    this.count++;
  }

  data(): HistogramData {
    return { bounds: [...this.bounds], counts: [...this.counts], sum: this.sum, count: this.count };
  }
}

/** Is `value` a HistogramData (from a status file another version may have written)? */
export function isHistogramData(value: unknown): value is HistogramData {
  const h = value as HistogramData;
  return (
    typeof h === 'object' && h !== null && Array.isArray(h.bounds) && Array.isArray(h.counts) &&
    h.counts.length === h.bounds.length + 1 && typeof h.sum === 'number' && typeof h.count === 'number'
  );
}

/**
 * The sum of histograms with the given bounds, as cumulative Prometheus
 * buckets (`le` bound -> observations at or below it, "+Inf" last).
 * Histograms with other bounds are left out rather than mixed in wrong.
 */
export function cumulativeBuckets(histograms: HistogramData[], bounds: number[] = FETCH_SECONDS_BUCKETS): { buckets: Array<[string, number]>; sum: number; count: number } {
  const perBucket = new Array<number>(bounds.length + 1).fill(0);
  let sum = 0;
  let count = 0;
  for (const h of histograms) {
    if (h.bounds.length !== bounds.length || h.bounds.some((b, i) => b !== bounds[i])) continue;
    h.counts.forEach((c, i) => (perBucket[i]! += c));
    sum += h.sum;
    count += h.count;
  }
  let running = 0;
  const buckets: Array<[string, number]> = perBucket.map((c, i) => {
    running += c;
    return [i < bounds.length ? String(bounds[i]) : '+Inf', running];
  });
  return { buckets, sum, count };
}
