/**
 * Watches on the controller's HTTP API (`GET /clonesets/NAME?watch=1`) and
 * `lazypull rollout status --watch`, which follows them: the first event is
 * the set as it is, each change follows as it is made (never the same object
 * twice in a row), deletion ends the stream, and the CLI polls a controller
 * that answers without a stream.
 *
 * The rollout logic here runs on an in-memory node (pods appear and change
 * the moment they are asked to), so that the stream's protocol is tested on
 * its own; test-controller.ts follows a rollout on containerd with
 * `rollout status --watch`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchController } from '../src/cli/controller-http';
import { Controller, type CloneSetStatusView } from '../src/controller/controller';
import { startHttpApi, type HttpApi } from '../src/controller/http-api';
import { StateStore } from '../src/controller/state-store';
import { CLI_PATH } from './support/cli';
import { cloneSetYaml } from './support/controller-fixture';
import { memoryNode } from './support/memory-node';

interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: { spec?: { name: string }; status?: CloneSetStatusView; name?: string };
}

const put = async (url: string, yaml: string): Promise<void> => {
  const res = await fetch(`${url}/clonesets`, { method: 'PUT', body: yaml });
  assert.ok(res.ok, await res.text());
};

const rolledOut = (s: CloneSetStatusView | undefined, replicas: number): boolean =>
  s !== undefined && s.replicas === replicas && s.updatedReadyReplicas === replicas && s.readyReplicas === replicas && s.pods.every((p) => p.ready);

function waitUntil(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (check()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 10);
    };
    poll();
  });
}

describe('controller watches: GET /clonesets/NAME?watch=1 and rollout status --watch', function () {
  this.timeout(120_000);
  let dir: string;
  let store: StateStore;
  let controller: Controller;
  let api: HttpApi;
  const yaml = (name: string, replicas: number, image: string): string => cloneSetYaml({ name, replicas, image, sidecarImage: 'sidecar:v1', maxUnavailable: 1 });

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'lzp-watch-'));
    store = StateStore.open(join(dir, 'store'));
    // A pod (or a replaced container) runs and is ready 20 ms after it is asked for.
    controller = new Controller({ runtime: memoryNode({ stepMs: 20, replacedReady: true, readinessNow: false }).runtime, store, resyncMs: 200 });
    await controller.start();
    api = await startHttpApi(controller, '127.0.0.1:0');
  });
  after(async function () {
    await api?.close();
    await controller?.stop();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('streams the set as it is, then each change, never the same object twice, and ends with DELETED', async function () {
    await put(api.url, yaml('w1', 3, 'app:v1'));
    const events: WatchEvent[] = [];
    const lines: string[] = [];
    const watch = watchController(api.url, '/clonesets/w1', (line) => {
      lines.push(line);
      events.push(JSON.parse(line) as WatchEvent);
    });
    await waitUntil('v1 rolled out', () => rolledOut(events.at(-1)?.object.status, 3));
    assert.equal(events[0].type, 'ADDED');
    assert.ok(events.slice(1).every((e) => e.type === 'MODIFIED'), events.map((e) => e.type).join());
    assert.equal(events[0].object.spec?.name, 'w1');

    const seen = events.length;
    await put(api.url, yaml('w1', 3, 'app:v2'));
    await waitUntil('v2 rolled out', () => {
      const s = events.at(-1)?.object.status;
      return rolledOut(s, 3) && s!.pods.every((p) => p.containers.some((c) => c.imageRef === 'ref-app:v2'));
    });
    const rollout = events.slice(seen).map((e) => e.object.status!);
    // maxUnavailable 1: the stream shows each pod leave the ready set and come back on v2, one at a time.
    const readyPods = rollout.map((s) => s.pods.filter((p) => p.ready).length);
    assert.equal(Math.min(...readyPods), 2, `ready pods seen during the rollout: ${readyPods.join()}`);
    const onV2 = rollout.map((s) => s.pods.filter((p) => p.ready && p.containers.some((c) => c.imageRef === 'ref-app:v2')).length);
    assert.deepEqual([...new Set(onV2)].sort(), [0, 1, 2, 3], `ready pods on v2 seen during the rollout: ${onV2.join()}`);
    for (let i = 1; i < lines.length; i++) assert.notEqual(JSON.stringify(JSON.parse(lines[i]).object), JSON.stringify(JSON.parse(lines[i - 1]).object), `event ${i} repeats the one before`);

    const deleting = fetch(`${api.url}/clonesets/w1`, { method: 'DELETE' });
    assert.deepEqual(await watch.done, { streamed: true });
    assert.deepEqual(events.at(-1), { type: 'DELETED', object: { name: 'w1' } });
    assert.equal((await deleting).status, 200);
  });

  it('the ready set as a stream (what a load balancer follows): each pod leaves and rejoins it, never 2 out at once with maxUnavailable 1', async function () {
    await put(api.url, yaml('lb', 3, 'app:v1'));
    await waitUntil('lb ready', () => rolledOut(controller.get('lb')?.status, 3));
    type Entry = { name: string; ip: string; revision: string; ready: boolean };
    const sets: Entry[][] = [];
    const all: Array<Array<Entry & { cloneset: string }>> = [];
    const watch = watchController(api.url, '/clonesets/lb/ready', (line) => {
      const event = JSON.parse(line) as { type: string; object: Entry[] };
      if (event.type !== 'DELETED') sets.push(event.object);
    });
    const everything = watchController(api.url, '/ready', (line) => all.push((JSON.parse(line) as { object: Array<Entry & { cloneset: string }> }).object));
    await waitUntil('the first ready set', () => sets.length > 0);
    assert.deepEqual(sets[0].map((e) => e.ready), [true, true, true]);
    const v1 = sets[0][0].revision;
    await put(api.url, yaml('lb', 3, 'app:v2'));
    await waitUntil('all ready on v2', () => {
      const last = sets.at(-1)!;
      return last.every((e) => e.ready && e.revision !== v1);
    });
    const out = sets.map((set) => set.filter((e) => !e.ready).map((e) => e.name));
    assert.ok(out.every((names) => names.length <= 1), `never more than 1 pod out: ${JSON.stringify(out)}`);
    assert.deepEqual([...new Set(out.flat())].sort(), ['lb-0', 'lb-1', 'lb-2'], 'each pod left the ready set once it was updated');
    assert.ok(all.some((entries) => entries.some((e) => e.cloneset === 'lb' && !e.ready)), 'GET /ready?watch=1 showed it too');
    everything.close();
    await fetch(`${api.url}/clonesets/lb`, { method: 'DELETE' });
    assert.deepEqual(await watch.done, { streamed: true }, 'the stream ends with the set');
  });

  it('an unknown set: 404, no stream', async function () {
    const lines: string[] = [];
    const watch = watchController(api.url, '/clonesets/nope', (line) => lines.push(line));
    const done = await watch.done;
    assert.equal(done.streamed, false);
    assert.equal(done.streamed === false && done.status, 404);
    assert.match(done.streamed === false ? done.text : '', /not found/);
    assert.deepEqual(lines, []);
  });

  it('a client that goes away is forgotten: the controller keeps serving', async function () {
    await put(api.url, yaml('w2', 1, 'app:v1'));
    const watches = Array.from({ length: 5 }, () => watchController(api.url, '/clonesets/w2', () => undefined));
    await new Promise((r) => setTimeout(r, 100));
    for (const w of watches) w.close();
    await Promise.all(watches.map((w) => w.done));
    await put(api.url, yaml('w2', 2, 'app:v1'));
    const res = await fetch(`${api.url}/clonesets/w2`);
    assert.equal(res.status, 200);
    await fetch(`${api.url}/clonesets/w2`, { method: 'DELETE' });
  });

  it('rollout status --watch --json prints each change as it happens and fails once the set is deleted', async function () {
    await put(api.url, yaml('w3', 2, 'app:v1'));
    await waitUntil('w3 ready', () => rolledOut(controller.get('w3')?.status, 2));
    const child = spawn(process.execPath, [CLI_PATH, 'rollout', 'status', 'w3', '--watch', '--json', '--server', api.url]);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitUntil('the first status printed', () => out.includes('\n'));
    await put(api.url, yaml('w3', 2, 'app:v2'));
    await waitUntil('v2 printed', () => out.trim().split('\n').some((l) => (JSON.parse(l) as CloneSetStatusView).pods.every((p) => p.ready && p.containers.some((c) => c.imageRef === 'ref-app:v2'))));
    const printed = out.trim().split('\n').map((l) => JSON.parse(l) as CloneSetStatusView);
    assert.ok(printed.length >= 3, `one line per change: ${out}`);
    assert.ok(printed.some((s) => s.readyReplicas === 1), `the pod out of the ready set was shown: ${out}`);
    await fetch(`${api.url}/clonesets/w3`, { method: 'DELETE' });
    assert.equal(await exited, 1, `exit code (stderr: ${err})`);
    assert.match(err, /CloneSet "w3" not found/);
  });

  describe('a controller without watches', function () {
    let server: Server;
    let url: string;
    let ready = 0;
    let gets = 0;
    before(async function () {
      // Answers every GET with the plain object, as a controller from before watches did.
      server = createServer((req, res) => {
        // Each poll finds one more pod ready; the watch request (answered, not streamed) does not count.
        if (!req.url?.includes('watch=')) ready = Math.min(2, gets++);
        const body = JSON.stringify({ spec: { name: 'old', replicas: 2 }, status: { replicas: 2, readyReplicas: ready, updatedReplicas: 2, updatedReadyReplicas: ready, updateRevision: 'r1' }, createdAt: Date.now() });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(function () {
      server?.close();
      server?.closeAllConnections();
    });

    it('rollout status --watch polls it every --interval', async function () {
      const child = spawn(process.execPath, [CLI_PATH, 'rollout', 'status', 'old', '--watch', '--interval', '100', '--server', url]);
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      await waitUntil('both pods shown ready', () => out.trim().split('\n').some((l) => l.split(/\s+/).slice(0, 6).join(' ') === 'old 2 2 2 2 2'));
      child.kill('SIGINT');
      await exited;
      const rows = out.trim().split('\n');
      assert.equal(rows.filter((l) => l.startsWith('NAME')).length, 1, out);
      assert.deepEqual(rows.slice(1).map((l) => l.split(/\s+/)[4]), ['0', '1', '2'], out);
    });
  });
});
