/**
 * Readiness probing: the schedule of probe runs before and after a
 * container's first success, against a probe command whose exit code the
 * test decides (no container needed: the tracker only sees exit codes).
 */
import { strict as assert } from 'node:assert';
import { setTimeout as sleep } from 'node:timers/promises';
import { FAST_RETRY_MS, FAST_RETRY_WINDOW_MS, FASTEST_RETRY_WINDOW_MS, FIRST_READY_RETRY_MS, QUIET_HOLD_MS, ReadinessTracker, type StartupQuiet } from '../src/controller/readiness';
import type { ExecProbe } from '../src/controller/types';

function probe(periodSeconds: number, failureThreshold = 1): ExecProbe {
  return { command: ['cat', '/tmp/ready'], initialDelaySeconds: 0, periodSeconds, timeoutSeconds: 1, successThreshold: 1, failureThreshold };
}

/** A probe target whose exit codes are scripted; it records when each run began. */
function scriptedExec(exitCodes: (run: number) => number) {
  const runs: number[] = [];
  const exec = async (): Promise<number> => {
    runs.push(Date.now());
    return exitCodes(runs.length - 1);
  };
  return { runs, exec };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

describe('readiness probes', function () {
  let tracker: ReadinessTracker | undefined;
  afterEach(() => tracker?.close());

  it('retries a failed probe every 0.05 s in the first half second, every 0.1 s to the end of the first, then backs off, until the container was ready once', async function () {
    // Never passes (the app is still starting) during the 1.8 s watched, with a 5 s period.
    const { runs, exec } = scriptedExec(() => 1);
    tracker = new ReadinessTracker(exec);
    const started = Date.now();
    assert.equal(await tracker.observe('c1', probe(5), started * 1e6), false, 'unready until a probe passed');
    await sleep(1800);
    const gaps = runs.slice(1).map((t, i) => t - runs[i]!);
    const fastest = runs.filter((t) => t - started < FASTEST_RETRY_WINDOW_MS);
    const early = runs.filter((t) => t - started < FAST_RETRY_WINDOW_MS);
    // Doubling from the start would give 4 runs in that second (0, 0.1, 0.3, 0.7 s).
    assert.ok(fastest.length >= 7, `${fastest.length} runs in the first half second: ${gaps.join(', ')}`);
    assert.ok(early.length - fastest.length >= 3 && early.length - fastest.length <= 6, `every 0.1 s in the second half: ${gaps.join(', ')}`);
    assert.ok(gaps.every((g) => g >= FIRST_READY_RETRY_MS - 5), `never more often than every 0.05 s: ${gaps.join(', ')}`);
    const secondHalf = runs.slice(1).filter((t, i) => runs[i]! - started >= FASTEST_RETRY_WINDOW_MS + 5 && t - started < FAST_RETRY_WINDOW_MS);
    assert.ok(secondHalf.every((t) => t - runs[runs.indexOf(t) - 1]! >= FAST_RETRY_MS - 5), `then never more often than every 0.1 s: ${gaps.join(', ')}`);
    const late = gaps.slice(early.length - 1);
    assert.ok(late.length >= 2, `runs after the first second: ${gaps.join(', ')}`);
    for (let i = 1; i < late.length; i++) assert.ok(late[i]! > late[i - 1]!, `after the first second the gaps grow: ${late.join(', ')}`);
    assert.ok(gaps.every((g) => g < 5000 / 2), `retry gaps stay below the period: ${gaps.join(', ')}`);
  });

  it('turns ready on the first passing retry', async function () {
    const { runs, exec } = scriptedExec((run) => (run < 3 ? 1 : 0));
    let changes = 0;
    tracker = new ReadinessTracker(exec, () => changes++);
    const started = Date.now();
    assert.equal(await tracker.observe('c1b', probe(5), started * 1e6), false);
    await waitFor(() => changes > 0, 4000);
    assert.equal(await tracker.observe('c1b', probe(5), started * 1e6), true);
    assert.equal(runs.length, 4);
  });

  it('counts a retry interval from the start of the failed probe, not its end (a slow exec is not added to it)', async function () {
    // The first run takes 250 ms (longer than the 50 ms retry interval) and fails; the second passes.
    const ends: number[] = [];
    const { runs, exec } = scriptedExec((run) => (run === 0 ? 1 : 0));
    const slowExec = async (): Promise<number> => {
      const code = await exec();
      if (runs.length === 1) await sleep(250);
      ends.push(Date.now());
      return code;
    };
    let changes = 0;
    tracker = new ReadinessTracker(slowExec, () => changes++);
    assert.equal(await tracker.observe('c4', probe(5), Date.now() * 1e6), false);
    await waitFor(() => changes > 0, 4000);
    assert.equal(runs.length, 2);
    // Counted from the end, the retry would begin 50 ms after the slow run; from its start, it is due at once.
    const idle = runs[1]! - ends[0]!;
    assert.ok(idle < FIRST_READY_RETRY_MS / 2, `the retry began ${idle} ms after the slow probe ended`);
  });

  it('a container tracked at its start is first probed 0.05 s after it; a listing afterwards reuses that verdict', async function () {
    const { runs, exec } = scriptedExec(() => 0);
    tracker = new ReadinessTracker(exec);
    const started = Date.now();
    await tracker.track('c5', probe(5), started);
    assert.equal(runs.length, 0, 'no exec at the very start');
    await waitFor(() => runs.length === 1, 2000);
    assert.ok(runs[0]! - started >= FIRST_READY_RETRY_MS - 5, `first probe ${runs[0]! - started} ms after the start`);
    await sleep(20);
    assert.equal(await tracker.observe('c5', probe(5), started * 1e6), true);
    assert.equal(runs.length, 1, 'observe() did not probe again');
  });

  /** A quiet signal the test drives: the app turns quiet at `quietAt` (ms since the epoch; Infinity: never). */
  function scriptedQuiet(): { quiet: StartupQuiet; asks: number[]; quietAt: number } {
    const state = { asks: [] as number[], quietAt: Infinity, quiet: undefined as unknown as StartupQuiet };
    state.quiet = async (maxWaitMs) => {
      state.asks.push(Date.now());
      const until = Math.min(state.quietAt, Date.now() + maxWaitMs);
      await sleep(Math.max(0, until - Date.now()));
      return Date.now() >= state.quietAt ? 'quiet' : 'busy';
    };
    return state;
  }

  it('with a quiet signal, a container tracked at its start is first probed when its app goes quiet, sooner or later than 0.05 s', async function () {
    const { runs, exec } = scriptedExec(() => 0);
    tracker = new ReadinessTracker(exec);
    const soon = scriptedQuiet();
    const started = Date.now();
    soon.quietAt = started + 15;
    void tracker.track('q1', probe(5), started, soon.quiet);
    await waitFor(() => runs.length === 1, 2000);
    assert.ok(runs[0]! - started >= 10 && runs[0]! - started < FIRST_READY_RETRY_MS, `probed ${runs[0]! - started} ms after the start, when quiet`);
    await waitFor(() => tracker!.current('q1'), 1000);

    const late = scriptedQuiet();
    const { runs: lateRuns, exec: lateExec } = scriptedExec(() => 0);
    const other = new ReadinessTracker(lateExec);
    try {
      const t0 = Date.now();
      late.quietAt = t0 + 150;
      void other.track('q2', probe(5), t0, late.quiet);
      await sleep(120);
      assert.equal(lateRuns.length, 0, 'no probe while the app is busy');
      await waitFor(() => lateRuns.length === 1, 2000);
      assert.ok(lateRuns[0]! - t0 >= 145, `probed ${lateRuns[0]! - t0} ms after the start, once quiet`);
    } finally {
      other.close();
    }
  });

  it('with a quiet signal, an app that stays busy is still probed, QUIET_HOLD_MS late; one that cannot be watched keeps the fixed first delay', async function () {
    const { runs, exec } = scriptedExec((run) => (run < 1 ? 1 : 0));
    tracker = new ReadinessTracker(exec);
    const busy = scriptedQuiet(); // never quiet
    const started = Date.now();
    void tracker.track('b1', probe(5), started, busy.quiet);
    await waitFor(() => runs.length === 2, 3000);
    assert.ok(runs[0]! - started >= QUIET_HOLD_MS - 5 && runs[0]! - started < QUIET_HOLD_MS + 150, `first probe ${runs[0]! - started} ms after the start`);
    assert.ok(runs[1]! - runs[0]! >= QUIET_HOLD_MS - 5, `the failed probe's retry waited for quiet too: ${runs[1]! - runs[0]!} ms`);
    await waitFor(() => tracker!.current('b1'), 1000);
    await sleep(300);
    assert.equal(runs.length, 2, 'ready: the next probe is a period away');

    const { runs: unRuns, exec: unExec } = scriptedExec(() => 0);
    const other = new ReadinessTracker(unExec);
    try {
      const t0 = Date.now();
      void other.track('u1', probe(5), t0, async () => 'unknown');
      await waitFor(() => unRuns.length === 1, 2000);
      assert.ok(unRuns[0]! - t0 >= FIRST_READY_RETRY_MS - 5, `first probe ${unRuns[0]! - t0} ms after the start`);
    } finally {
      other.close();
    }
  });

  it('a listing that began before a container was tracked does not stop its probing; a later one does', async function () {
    const { runs, exec } = scriptedExec(() => 0);
    tracker = new ReadinessTracker(exec);
    const listedAt = Date.now();
    await sleep(5);
    await tracker.track('c6', probe(5), Date.now());
    // That listing saw the container before it ran: not in the running set.
    tracker.retain(new Set(), listedAt);
    await waitFor(() => runs.length === 1, 2000);
    await sleep(20);
    assert.equal(await tracker.observe('c6', probe(5), Date.now() * 1e6), true, 'still probed, still ready');
    assert.equal(runs.length, 1);
    await sleep(5);
    tracker.retain(new Set(), Date.now());
    assert.equal(await tracker.observe('c6', probe(5), Date.now() * 1e6), true);
    assert.equal(runs.length, 2, 'forgotten by the later listing, probed anew on the next sight');
  });

  it('a retired container (being stopped) is unready and never probed again, though a listing still shows it running; reinstated, it is', async function () {
    const { runs, exec } = scriptedExec(() => 0);
    tracker = new ReadinessTracker(exec);
    const started = Date.now() - 10_000;
    assert.equal(await tracker.observe('c7', probe(0.1), started * 1e6), true);
    assert.equal(tracker.current('c7'), true);
    tracker.retire('c7');
    assert.equal(tracker.current('c7'), false);
    const probedBefore = runs.length;
    // A listing begun before the stop still shows it running.
    tracker.retain(new Set(['c7']), Date.now());
    assert.equal(await tracker.observe('c7', probe(0.1), started * 1e6), false, 'unready while it stops');
    await sleep(300);
    assert.equal(runs.length, probedBefore, 'no probe of a container being stopped');
    // Its stop failed and it runs on: probed again on the next sight.
    tracker.reinstate('c7');
    assert.equal(await tracker.observe('c7', probe(0.1), started * 1e6), true);
    assert.equal(runs.length, probedBefore + 1);
    // Once a listing shows it gone, the retirement is forgotten with it.
    tracker.retire('c7');
    tracker.retain(new Set(), Date.now());
    assert.equal(tracker.current('c7'), false);
    assert.equal(await tracker.observe('c7', probe(0.1), started * 1e6), true, 'not retired any more (CRI never reuses an id)');
  });

  it('stops retrying early once the backoff reaches the period', async function () {
    // Never passes: with a 0.3 s period the retries go every 0.05 s for 0.3 s (6 or 7 of them, as the timers fall), then 0.2, then 0.3 s each.
    const { runs, exec } = scriptedExec(() => 1);
    tracker = new ReadinessTracker(exec);
    await tracker.observe('c2', probe(0.3), Date.now() * 1e6);
    await waitFor(() => runs.length >= 11, 4000);
    const gaps = runs.slice(1).map((t, i) => t - runs[i]!);
    // Where the fast retries end depends on a timer firing a millisecond early or late; the tail does not.
    assert.ok(gaps[0]! < 290, `fast retries first: ${gaps.join(', ')}`);
    assert.ok(gaps.slice(-2).every((g) => g >= 290), `after the backoff, every gap is a period: ${gaps.join(', ')}`);
  });

  it('probes every period after the first success, also when the container turns unready', async function () {
    // Passes once, then fails: the failure is seen one period later, and the next probe is a period after that.
    const { runs, exec } = scriptedExec((run) => (run === 0 ? 0 : 1));
    const readiness: boolean[] = [];
    tracker = new ReadinessTracker(exec, () => readiness.push(true));
    assert.equal(await tracker.observe('c3', probe(0.5), Date.now() * 1e6), true);
    await waitFor(() => runs.length >= 3, 4000);
    const gaps = runs.slice(1).map((t, i) => t - runs[i]!);
    assert.ok(gaps.every((g) => g >= 490), `no fast retries once the container was ready: ${gaps.join(', ')}`);
    assert.equal(await tracker.observe('c3', probe(0.5), 0), false, 'one failure with failureThreshold 1 makes it unready');
  });
});
