/**
 * process-quiet (src/util/process-quiet.ts), which times a new container's
 * first readiness probes: a process tree is quiet once every thread of it
 * sleeps and uses no CPU between two looks; a busy process (or a busy child
 * under a sleeping parent) is not; an exited one is gone.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import type { WatchedProcess } from '../src/util/namespace-init-exit';
import { readProcStat } from '../src/util/proc-stat';
import { treeActivity, whenQuiet } from '../src/util/process-quiet';

/** A process identified as the watcher needs it: pid and start time. */
function identify(pid: number): WatchedProcess {
  return { pid, startTime: readProcStat(`/proc/${pid}/stat`)!.startTime };
}

/** Node code that spins for `ms`, prints "done", then sleeps. */
const spinThenSleep = (ms: number): string => `const end = Date.now() + ${ms}; while (Date.now() < end) {} process.stdout.write('done\\n'); setTimeout(() => {}, 4000);`;

describe('process-quiet', function () {
  if (process.platform !== 'linux') {
    it('needs Linux /proc', function () {
      assert.fail('process-quiet reads /proc: run the tests on Linux');
    });
    return;
  }
  const started: ChildProcess[] = [];
  afterEach(function () {
    for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  function run(command: string, args: string[]): ChildProcess {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child);
    return child;
  }

  const printed = (child: ChildProcess, text: string): Promise<number> =>
    new Promise((resolve) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes(text)) resolve(Date.now());
      });
    });

  it('finds a sleeping process quiet within a few looks', async function () {
    const child = run('sleep', ['30']);
    await new Promise((r) => setTimeout(r, 100)); // past its exec
    const since = Date.now();
    assert.equal(await whenQuiet(identify(child.pid!), { pollMs: 5, maxWaitMs: 2000 }), 'quiet');
    assert.ok(Date.now() - since < 1000, 'seen quiet long before the limit');
    const look = treeActivity(identify(child.pid!));
    assert.equal(look?.asleep, true);
  });

  it('waits while the process works, answers quiet only after it is done, and busy at the limit', async function () {
    const child = run(process.execPath, ['-e', spinThenSleep(1500)]);
    const done = printed(child, 'done');
    await new Promise((r) => setTimeout(r, 200)); // Node started and spinning
    const watched = identify(child.pid!);
    assert.equal(treeActivity(watched)?.asleep, false, 'a spinning process is at work');
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 200 }), 'busy');
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 10_000 }), 'quiet');
    const quietAt = Date.now();
    const doneAt = await done;
    assert.ok(quietAt >= doneAt - 5, `quiet ${doneAt - quietAt} ms before the spin ended`);
  });

  it('counts the children: a sleeping parent with a busy child is not quiet', async function () {
    const shell = run('sh', ['-c', `"${process.execPath}" -e "${spinThenSleep(1200).replace(/"/g, '\\"')}"; exit 0`]);
    const done = printed(shell, 'done');
    await new Promise((r) => setTimeout(r, 200));
    const watched = identify(shell.pid!);
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 300 }), 'busy');
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 10_000 }), 'quiet');
    const quietAt = Date.now();
    assert.ok(quietAt >= (await done) - 5);
  });

  it('answers gone for a process that exits, and treeActivity has nothing to say of it', async function () {
    const child = run('sleep', ['0.3']);
    const watched = identify(child.pid!);
    const exited = new Promise((r) => child.on('exit', r));
    // Quiet first: it sleeps.
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 2000 }), 'quiet');
    await exited;
    assert.equal(await whenQuiet(watched, { pollMs: 5, maxWaitMs: 2000 }), 'gone');
    assert.equal(treeActivity(watched), undefined);
  });
});
