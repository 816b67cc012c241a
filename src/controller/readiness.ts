/**
 * Exec readiness probes, as a kubelet runs them: once a container runs, wait
 * `initialDelaySeconds` after its start, then run the probe command every
 * `periodSeconds` (each run limited to `timeoutSeconds`). The container turns
 * ready after `successThreshold` consecutive successes and unready after
 * `failureThreshold` consecutive failures; it starts unready. A container
 * without a probe is ready while it runs (decided by the caller).
 *
 * One difference from a kubelet, on purpose: until a new container has been
 * ready once, a failed probe is retried sooner: every 0.05 s during the
 * first half second it is due, every 0.1 s for the rest of the first second
 * (neither past the first period, if shorter), when most apps finish
 * starting, then at intervals doubling up to the period. An in-place restart
 * is meant to be near-instant, and an app that needs 0.1-0.3 s to start
 * would otherwise stay out of the ready set (and hold up the rollout's next
 * wave) for a whole period, or for the gaps of a backoff that begins at once.
 * An app ready 50-100 ms after its start is seen by the probe 0.05 s on
 * (the rollout benchmark's app: 35 ms sooner per wave than with 0.1 s), and
 * a slow app costs a few more execs, only in its first half second. A
 * container this controller has just started is first probed 0.05 s after
 * its start, not at it (see track()), unless its processes can be watched:
 * then each probe until the first success waits (at most QUIET_HOLD_MS) for
 * the app to go quiet, and the first one runs as soon as it is (see
 * util/process-quiet.ts). After the first success the probe runs every
 * `periodSeconds`, exactly as specified.
 *
 * Intervals run from the start of one probe to the start of the next, as a
 * kubelet's ticker runs them: an exec probe takes 40-100 ms itself, and
 * counting the interval from its end would add that to every retry.
 *
 * The tracker knows nothing of CRI: it is given a function that runs a
 * command in a container and answers with the exit code.
 */
import type { ExecProbe } from './types';

/** Run `command` in the container; the exit code (an error counts as a failure). */
export type ProbeExec = (containerId: string, command: string[], timeoutSec: number) => Promise<number>;

/**
 * Resolves 'quiet' once the container's processes look quiet, 'busy' after
 * at most `maxWaitMs`, 'gone' once they have exited, and 'unknown' at once
 * when they cannot be watched (util/process-quiet.ts).
 */
export type StartupQuiet = (maxWaitMs: number) => Promise<'quiet' | 'busy' | 'gone' | 'unknown'>;

/** The smallest period we run probes at, so a bad spec cannot busy-loop. */
const MIN_PERIOD_MS = 100;
/** Retry interval of a failed probe before the container was ever ready, during FASTEST_RETRY_WINDOW_MS after the first probe was due. */
export const FIRST_READY_RETRY_MS = 50;
export const FASTEST_RETRY_WINDOW_MS = 500;
/** Then this interval until FAST_RETRY_WINDOW_MS. */
export const FAST_RETRY_MS = 100;
/** After that window (capped at the period) the retry interval doubles, up to the period. */
export const FAST_RETRY_WINDOW_MS = 1000;
/**
 * Until a container has been ready once, a due probe waits at most this long
 * for its processes to go quiet: an app that stays busy after it is ready is
 * probed anyway, this much later.
 */
export const QUIET_HOLD_MS = 250;

class ContainerProber {
  ready = false;
  /** When probing began (ms since the epoch). */
  readonly since = Date.now();
  private successes = 0;
  private failures = 0;
  private everReady = false;
  private nextRetryMs = 2 * FAST_RETRY_MS;
  /** When the first probe was due: the container's start plus initialDelaySeconds (ms since the epoch). */
  private readonly dueAt: number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The first run when it was due at once (a container seen long after its start). */
  readonly first: Promise<void> | undefined;
  private readonly startedAtMs: number;
  private probed = false;

  constructor(
    readonly containerId: string,
    private readonly probe: ExecProbe,
    startedAtMs: number,
    private readonly exec: ProbeExec,
    private readonly onChange: () => void,
    private readonly minFirstDelayMs = 0,
    private quiet?: StartupQuiet,
  ) {
    this.startedAtMs = startedAtMs;
    this.dueAt = startedAtMs + Math.max(quiet ? 0 : minFirstDelayMs, Math.max(0, probe.initialDelaySeconds || 0) * 1000);
    const delay = this.dueAt - Date.now();
    if (delay <= 0) this.first = this.runOnce();
    else this.schedule(delay);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.runOnce(), ms);
    this.timer.unref();
  }

  private async runOnce(): Promise<void> {
    if (this.stopped) return;
    if (this.quiet !== undefined && !this.everReady) {
      const seen = await this.quiet(QUIET_HOLD_MS);
      if (this.stopped) return;
      if (seen === 'unknown') {
        // Nothing to watch: the probes keep their fixed times, the first one minFirstDelayMs after the start.
        this.quiet = undefined;
        const wait = this.startedAtMs + this.minFirstDelayMs - Date.now();
        if (!this.probed && wait > 0) return this.schedule(wait);
      }
    }
    this.probed = true;
    const began = Date.now();
    const timeoutSec = Math.max(1, Math.ceil(this.probe.timeoutSeconds || 1));
    let ok = false;
    try {
      ok = (await this.exec(this.containerId, this.probe.command, timeoutSec)) === 0;
    } catch {
      ok = false;
    }
    if (this.stopped) return;
    if (ok) {
      this.successes++;
      this.failures = 0;
      if (!this.ready && this.successes >= Math.max(1, this.probe.successThreshold || 1)) this.set(true);
    } else {
      this.failures++;
      this.successes = 0;
      if (this.ready && this.failures >= Math.max(1, this.probe.failureThreshold || 3)) this.set(false);
    }
    const periodMs = Math.max(MIN_PERIOD_MS, (this.probe.periodSeconds || 10) * 1000);
    let intervalMs = periodMs;
    const sinceDue = began - this.dueAt;
    if (!this.everReady && sinceDue < Math.min(periodMs, FAST_RETRY_WINDOW_MS)) {
      intervalMs = Math.min(sinceDue < FASTEST_RETRY_WINDOW_MS ? FIRST_READY_RETRY_MS : FAST_RETRY_MS, periodMs);
    } else if (!this.everReady && this.nextRetryMs < periodMs) {
      intervalMs = this.nextRetryMs;
      this.nextRetryMs *= 2;
    }
    // A probe that took longer than the interval is followed at once.
    this.schedule(Math.max(0, began + intervalMs - Date.now()));
  }

  private set(ready: boolean): void {
    this.ready = ready;
    if (ready) this.everReady = true;
    this.onChange();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

/** Probers of the running containers, by container id. */
export class ReadinessTracker {
  private readonly probers = new Map<string, ContainerProber>();
  /**
   * Containers being stopped (retire()): not probed again, although a
   * listing begun before the stop may still show them running. Each probe
   * of a dying container is an exec that fails, at the busiest moment.
   */
  private readonly retired = new Set<string>();

  /** `onChange` runs whenever a container's readiness flips (a reconcile trigger). */
  constructor(
    private readonly exec: ProbeExec,
    private readonly onChange: () => void = () => undefined,
  ) {}

  /**
   * Readiness of a running container with this probe: starts probing it on
   * first sight, answers the current verdict (false until it has passed).
   * When the first probe is due at once (e.g. a restarted controller finding
   * old containers), the answer waits for it, so running pods do not look
   * unready for one period.
   */
  async observe(containerId: string, probe: ExecProbe, startedAtNs: number): Promise<boolean> {
    if (this.retired.has(containerId)) return false;
    let prober = this.probers.get(containerId);
    if (prober === undefined) {
      const startedAtMs = startedAtNs > 0 ? Math.floor(startedAtNs / 1e6) : Date.now();
      prober = new ContainerProber(containerId, probe, startedAtMs, this.exec, this.onChange);
      this.probers.set(containerId, prober);
      await prober.first;
    }
    return prober.ready;
  }

  /**
   * Start probing a container this process has just started, before anyone
   * lists it. An exec at the very start runs before the app has done
   * anything, so it fails and only takes CPU from the app's start (in the
   * rollout benchmark, where the node's 2 cores are busy throughout,
   * skipping it made rollouts 0.2 s faster, 4 runs of each in turn). So the
   * first probe runs when `quiet` says the app's processes have gone quiet,
   * or, without it (or when it cannot watch them), FIRST_READY_RETRY_MS
   * after the start. Resolves when the first run is over, or at once when
   * it is delayed.
   */
  async track(containerId: string, probe: ExecProbe, startedAtMs: number, quiet?: StartupQuiet): Promise<void> {
    if (this.probers.has(containerId)) return;
    const prober = new ContainerProber(containerId, probe, startedAtMs, this.exec, this.onChange, FIRST_READY_RETRY_MS, quiet);
    this.probers.set(containerId, prober);
    await prober.first;
  }

  /** Stop probing a container (stopped, replaced or gone). */
  forget(containerId: string): void {
    this.probers.get(containerId)?.stop();
    this.probers.delete(containerId);
  }

  /** The verdict so far, without probing: false for a container not probed (or retired). */
  current(containerId: string): boolean {
    return !this.retired.has(containerId) && this.probers.get(containerId)?.ready === true;
  }

  /** Stop probing a container that is being stopped, for good: it is unready from now on. */
  retire(containerId: string): void {
    this.forget(containerId);
    this.retired.add(containerId);
  }

  /** Undo retire() (its stop failed and it runs on): the next listing probes it again. */
  reinstate(containerId: string): void {
    this.retired.delete(containerId);
  }

  /**
   * Stop probing every container not in `alive`, what a listing begun at
   * `listedAtMs` shows running. Probing that began after that is kept: the
   * listing may predate its container's start.
   */
  retain(alive: Set<string>, listedAtMs = Number.POSITIVE_INFINITY): void {
    for (const [id, prober] of [...this.probers]) if (!alive.has(id) && prober.since < listedAtMs) this.forget(id);
    // A retired container no longer running is done with (its id is never reused).
    for (const id of [...this.retired]) if (!alive.has(id)) this.retired.delete(id);
  }

  close(): void {
    for (const id of [...this.probers.keys()]) this.forget(id);
    this.retired.clear();
  }
}
