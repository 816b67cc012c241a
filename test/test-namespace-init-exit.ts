/**
 * namespace-init-exit (src/util/namespace-init-exit.ts), which lets an
 * in-place update start the new container as soon as the old one's processes
 * are gone: only the init of its own PID namespace, in the named cgroup, is
 * watchable; its exit is seen, and by then the rest of its namespace is gone
 * too; a zombie counts as exited, as does a pid that changed hands.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { hasExited, processExit, watchableNamespaceInit } from '../src/util/namespace-init-exit';
import { requireBinary, requireRoot } from './support/require-env';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Pids of a process's children (kernel's own list, as /proc shows it). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(10)) {
    const value = probe();
    if (value !== undefined) return value;
  }
  throw new Error(`timed out waiting for ${what}`);
}

function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  } catch {
    return true;
  }
}

/** The path of this process's cgroup in the unified (or first) hierarchy: children inherit it. */
function ownCgroupPath(): string {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
  const line = lines.find((l) => l.startsWith('0::')) ?? lines[0];
  return line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
}

describe('namespace-init-exit', function () {
  const started: ChildProcess[] = [];
  afterEach(function () {
    for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  /** A shell as PID 1 of a new PID namespace, with a sleeping child of its own: [its host pid, the child's]. */
  async function namespaceInit(): Promise<[number, number]> {
    const unshare = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sh', '-c', 'trap "exit 0" TERM; while :; do sleep 30 & wait $!; done'], { stdio: 'ignore' });
    started.push(unshare);
    const init = await waitFor('the namespace init', () => childrenOf(unshare.pid ?? 0)[0]);
    const inner = await waitFor('its sleeping child', () => childrenOf(init)[0]);
    return [init, inner];
  }

  it('watches the init of its own PID namespace in the named cgroup, nothing else', async function () {
    requireRoot(this);
    requireBinary(this, 'unshare');
    const [init] = await namespaceInit();
    const watched = watchableNamespaceInit(init, ownCgroupPath());
    assert.ok(watched, 'a namespace init in our cgroup is watchable');
    assert.equal(watched.pid, init);
    assert.equal(hasExited(watched), false);
    assert.equal(watchableNamespaceInit(init, 'no-such-container-id'), undefined, 'a cgroup path without the marker: maybe not the container');

    const plain = spawn('sleep', ['30'], { stdio: 'ignore' });
    started.push(plain);
    assert.equal(watchableNamespaceInit(plain.pid ?? 0, ownCgroupPath()), undefined, 'a process sharing our PID namespace is not watchable');
    assert.equal(watchableNamespaceInit(2 ** 22 + 1, ownCgroupPath()), undefined, 'no such pid');
  });

  it('sees the exit, and by then the rest of the namespace is gone too', async function () {
    requireRoot(this);
    requireBinary(this, 'unshare');
    const [init, inner] = await namespaceInit();
    const watched = watchableNamespaceInit(init, ownCgroupPath());
    assert.ok(watched);
    let settled = false;
    const never = new Promise<void>(() => undefined);
    const exit = processExit(watched, never).then(() => {
      settled = true;
    });
    await sleep(50);
    assert.equal(settled, false, 'a running process has not exited');
    process.kill(init, 'SIGTERM');
    await exit;
    assert.equal(hasExited(watched), true);
    // The shell's child got no signal from us: the kernel killed it when the namespace's init exited.
    assert.equal(gone(inner), true, 'nothing of the namespace runs once its init has exited');
  });

  it('resolves when told to stop waiting; a zombie and a reused pid count as exited', async function () {
    requireRoot(this);
    requireBinary(this, 'unshare');
    const [init] = await namespaceInit();
    const watched = watchableNamespaceInit(init, ownCgroupPath());
    assert.ok(watched);
    let answer!: () => void;
    const stopped = new Promise<void>((resolve) => (answer = resolve));
    const exit = processExit(watched, stopped);
    answer();
    await exit;
    assert.equal(hasExited(watched), false, 'it still runs: the wait ended because it was told to');

    assert.equal(hasExited({ pid: init, startTime: '1' }), true, 'the same pid with another start time is another process');

    // A parent that never waits: its finished child stays a zombie.
    const parent = spawn('sh', ['-c', 'sleep 0.05 & exec sleep 30'], { stdio: 'ignore' });
    started.push(parent);
    const zombie = await waitFor('the zombie child', () => childrenOf(parent.pid ?? 0).find((pid) => gone(pid)));
    const stat = readFileSync(`/proc/${zombie}/stat`, 'utf8');
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    assert.equal(hasExited({ pid: zombie, startTime }), true, 'a zombie has exited');
  });
});
