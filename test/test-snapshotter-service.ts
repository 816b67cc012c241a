/**
 * The Snapshots gRPC service as containerd sees it: semantics, error codes,
 * labels and filters, cleanup, and a metadata store that stays consistent
 * across `kill -9` at any point.
 */
import { strict as assert } from 'node:assert';
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSnapshotsService, serveSnapshots } from '../src/snapshotter/grpc-service';
import { MetadataStore } from '../src/snapshotter/metadata-store';
import { Snapshotter } from '../src/snapshotter/snapshotter';

type Client = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

function call<T = any>(client: Client, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => client[method](req, (err, res) => (err ? reject(err) : resolve(res as T))));
}

async function expectCode(promise: Promise<unknown>, code: grpc.status): Promise<void> {
  await assert.rejects(promise, (err: grpc.ServiceError) => {
    assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    return true;
  });
}

function list(client: Client, filters: string[] = []): Promise<Array<{ name: string; parent: string; kind: string; labels: Record<string, string> }>> {
  return new Promise((resolve, reject) => {
    const out: any[] = [];
    const stream = (client as unknown as { List(req: unknown): grpc.ClientReadableStream<{ info: any[] }> }).List({ snapshotter: 'lazypull', filters });
    stream.on('data', (msg: { info: any[] }) => out.push(...msg.info));
    stream.on('end', () => resolve(out));
    stream.on('error', reject);
  });
}

describe('snapshotter gRPC service', function () {
  let dir: string;
  let snapshotter: Snapshotter;
  let server: grpc.Server;
  let client: Client;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'lzp-snap-'));
    snapshotter = await Snapshotter.open({ root: join(dir, 'root') });
    const socket = join(dir, 'snap.sock');
    server = await serveSnapshots(snapshotter, socket, () => undefined);
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    client = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
  });

  after(async function () {
    client?.close();
    if (server) await new Promise<void>((r) => server.tryShutdown(() => r()));
    await snapshotter?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('prepares, commits and stacks snapshots with overlay mounts', async function () {
    const base = await call(client, 'Prepare', { key: 'base-active', parent: '', labels: {} });
    assert.equal(base.mounts[0].type, 'bind');
    const upper = base.mounts[0].source as string;
    await writeFile(join(upper, 'hello'), 'hi');
    await call(client, 'Commit', { name: 'base', key: 'base-active', labels: { 'containerd.io/gc.root': 'x' } });
    const stat = await call(client, 'Stat', { key: 'base' });
    assert.equal(stat.info.kind, 'COMMITTED');
    assert.equal(stat.info.labels['containerd.io/gc.root'], 'x');
    await expectCode(call(client, 'Stat', { key: 'base-active' }), grpc.status.NOT_FOUND);
    const usage = await call(client, 'Usage', { key: 'base' });
    assert.ok(usage.size > 0 && usage.inodes >= 2);

    const child = await call(client, 'Prepare', { key: 'child', parent: 'base', labels: {} });
    assert.equal(child.mounts[0].type, 'overlay');
    const opts: string[] = child.mounts[0].options;
    assert.ok(opts.some((o) => o.startsWith('lowerdir=') && o.endsWith(upper)), opts.join(' '));
    assert.ok(opts.some((o) => o.startsWith('upperdir=')) && opts.some((o) => o.startsWith('workdir=')));
    const view = await call(client, 'View', { key: 'view', parent: 'base', labels: {} });
    assert.deepEqual([view.mounts[0].type, view.mounts[0].source], ['bind', upper]);
    assert.ok(view.mounts[0].options.includes('ro'));
    const mounts = await call(client, 'Mounts', { key: 'child' });
    assert.deepEqual(mounts.mounts, child.mounts);
  });

  it('answers with the error codes containerd expects', async function () {
    await expectCode(call(client, 'Stat', { key: 'nope' }), grpc.status.NOT_FOUND);
    await expectCode(call(client, 'Prepare', { key: 'x', parent: 'missing-parent', labels: {} }), grpc.status.NOT_FOUND);
    await expectCode(call(client, 'Prepare', { key: 'child', parent: 'base', labels: {} }), grpc.status.ALREADY_EXISTS);
    await expectCode(call(client, 'Prepare', { key: 'y', parent: 'child', labels: {} }), grpc.status.INVALID_ARGUMENT);
    await expectCode(call(client, 'Commit', { name: 'again', key: 'base', labels: {} }), grpc.status.FAILED_PRECONDITION);
    await expectCode(call(client, 'Commit', { name: 'base', key: 'child', labels: {} }), grpc.status.ALREADY_EXISTS);
    await expectCode(call(client, 'Commit', { name: 'z', key: 'nope', labels: {} }), grpc.status.NOT_FOUND);
    await expectCode(call(client, 'Remove', { key: 'base' }), grpc.status.FAILED_PRECONDITION);
    await expectCode(call(client, 'Mounts', { key: 'base' }), grpc.status.FAILED_PRECONDITION);
    await expectCode(call(client, 'Prepare', { key: '', parent: '', labels: {} }), grpc.status.INVALID_ARGUMENT);
    await expectCode(call(client, 'Update', { info: { name: 'base', labels: {} }, update_mask: { paths: ['parent'] } }), grpc.status.INVALID_ARGUMENT);
  });

  it('lets exactly one of many concurrent Prepares of a key succeed', async function () {
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => call(client, 'Prepare', { key: 'race', parent: 'base', labels: {} })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as grpc.ServiceError).code, grpc.status.ALREADY_EXISTS);
  });

  it('updates labels by mask and filters the listing', async function () {
    const updated = await call(client, 'Update', {
      info: { name: 'base', labels: { 'containerd.io/gc.root': '', team: 'a b' } },
      update_mask: { paths: ['labels.team', 'labels.containerd.io/gc.root'] },
    });
    assert.equal(updated.info.labels.team, 'a b');
    const all = await list(client);
    assert.deepEqual(all.map((i) => i.name).sort(), ['base', 'child', 'race', 'view']);
    assert.deepEqual((await list(client, ['kind==committed'])).map((i) => i.name), ['base']);
    assert.deepEqual((await list(client, ['parent==base,kind==active'])).map((i) => i.name).sort(), ['child', 'race']);
    assert.deepEqual((await list(client, ['labels.team=="a b"'])).map((i) => i.name), ['base']);
    assert.deepEqual((await list(client, ['name~=^vi', 'name==race'])).map((i) => i.name).sort(), ['race', 'view']);
    // containerd looks up a committed base layer with exactly this filter after ALREADY_EXISTS.
    assert.deepEqual((await list(client, ['labels."team"=="a b",parent==""'])).map((i) => i.name), ['base']);
    // A filter that cannot be parsed ends the stream with INVALID_ARGUMENT (not a stream that never ends).
    await expectCode(list(client, ['labels.team=="a b']), grpc.status.INVALID_ARGUMENT);
  });

  it('removes snapshots and cleans up directories nobody owns', async function () {
    const orphan = join(dir, 'root', 'snapshots', 'orphan-from-a-crash');
    await mkdir(join(orphan, 'fs'), { recursive: true });
    for (const key of ['view', 'race', 'child']) await call(client, 'Remove', { key });
    await call(client, 'Cleanup', {});
    assert.equal(existsSync(orphan), false);
    const left = await readdir(join(dir, 'root', 'snapshots'));
    assert.equal(left.length, 1, 'only base is left');
    await call(client, 'Remove', { key: 'base' });
    assert.deepEqual(await readdir(join(dir, 'root', 'snapshots')), []);
  });
});

describe('snapshotter metadata across kill -9', function () {
  it('is always consistent: every record whole, every parent present', async function () {
    const dir = await mkdtemp(join(tmpdir(), 'lzp-snap-crash-'));
    const root = join(dir, 'root');
    const worker = join(dir, 'worker.js');
    // A child that prepares, writes and commits layers as fast as it can until it is killed.
    await writeFile(worker, `
      const { Snapshotter } = require(${JSON.stringify(join(__dirname, '..', 'src', 'snapshotter', 'snapshotter.js'))});
      (async () => {
        const s = await Snapshotter.open({ root: ${JSON.stringify(root)} });
        process.send('ready');
        const run = process.argv[2];
        let parent = '';
        for (let i = 0; ; i++) {
          const key = run + '-active-' + i;
          const name = run + '-layer-' + i;
          await s.prepare(key, parent, { n: String(i) });
          await s.commit(name, key, { n: String(i) });
          if (i % 3 === 2) await s.remove(name);
          else parent = name;
        }
      })().catch((err) => { console.error(err); process.exit(3); });`);
    try {
      for (let round = 0; round < 5; round++) {
        const child: ChildProcess = fork(worker, [`run${round}`], { stdio: 'ignore' });
        const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        await new Promise((r) => child.once('message', r));
        await new Promise((r) => setTimeout(r, 150 + round * 70));
        assert.equal(child.exitCode, null, `round ${round}: the worker was still working when killed`);
        child.kill('SIGKILL');
        await exited;
        const store = MetadataStore.open(join(root, 'metadata'));
        try {
          const records = store.list();
          for (const r of records) {
            assert.ok(['ACTIVE', 'COMMITTED', 'VIEW'].includes(r.kind), `round ${round}: ${r.key} kind`);
            assert.ok(r.id && r.createdAt > 0 && r.labels.n !== undefined, `round ${round}: ${r.key} is whole`);
            if (r.parent) assert.ok(store.get(r.parent), `round ${round}: parent ${r.parent} of ${r.key} exists`);
            assert.ok(existsSync(join(root, 'snapshots', r.id, 'fs')), `round ${round}: ${r.key} has its directory`);
          }
        } finally {
          await store.close();
        }
      }
      // After the crashes, Cleanup leaves exactly the directories the metadata names.
      const s = await Snapshotter.open({ root });
      try {
        await s.cleanup();
        const ids = new Set(s.store.list().map((r) => r.id));
        assert.deepEqual(new Set(await readdir(join(root, 'snapshots'))), ids);
      } finally {
        await s.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
