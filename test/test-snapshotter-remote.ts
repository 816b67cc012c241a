/**
 * The snapshotter daemon's remote path, driven over gRPC with the labels
 * containerd sends: eStargz layers are committed as remote snapshots and
 * served over FUSE, other layers fall back, and the layers keep serving
 * across a `kill -9` of the daemon, which adopts them when it comes back.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { loadSnapshotsService } from '../src/snapshotter/grpc-service';
import { RegistryClient } from '../src/registry/client';
import { parseReference } from '../src/registry/reference';
import { CLI_PATH, runCliOk } from './support/cli';
import { buildBusyboxImage, HELLO_TEXT } from './support/oci-image';
import { startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireFuse, requireRoot } from './support/require-env';

const execFileP = promisify(execFile);
type Client = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

function call<T = any>(client: Client, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => client[method](req, (err, res) => (err ? reject(err) : resolve(res as T))));
}

/** Read a file from another process: the daemon's FUSE servers must never be read in-process. */
async function catFile(path: string): Promise<string> {
  const { stdout } = await execFileP('cat', [path], { timeout: 30_000 });
  return stdout;
}

async function fuseMountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').map((l) => l.split(' ')).filter((f) => f[2]?.startsWith('fuse') && f[1]?.startsWith(dir)).map((f) => f[1]);
}

describe('snapshotter daemon with remote layers', function () {
  let dir: string;
  let registry: RegistryFixture;
  let daemon: ChildProcess | undefined;
  let client: Client | undefined;
  let socket: string;
  let imageRef: string;
  let plainRef: string;
  let layers: Array<{ digest: string; annotations: Record<string, string> }>;

  async function startDaemon(): Promise<void> {
    daemon = spawn(process.execPath, [CLI_PATH, 'snapshotter', '--root', join(dir, 'root'), '--address', socket, '--plain-http-registry', registry.host, '--log-level', 'debug'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    daemon.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!log.includes('"event":"started"')) {
      if (daemon.exitCode !== null || Date.now() > deadline) throw new Error(`snapshotter did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    client = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Client;
  }

  function labelsFor(ref: string, layer: { digest: string; annotations: Record<string, string> }, target: string): Record<string, string> {
    const labels: Record<string, string> = {
      'containerd.io/snapshot.ref': target,
      'containerd.io/snapshot/cri.image-ref': ref,
      'containerd.io/snapshot/cri.layer-digest': layer.digest,
    };
    for (const [k, v] of Object.entries(layer.annotations ?? {})) if (k.startsWith('containerd.io/snapshot/')) labels[k] = v;
    return labels;
  }

  before(async function () {
    requireRoot(this);
    requireFuse(this);
    dir = await mkdtemp(join(tmpdir(), 'lzp-snap-remote-'));
    socket = join(dir, 'lazypull.sock');
    registry = await startRegistry();
    await buildBusyboxImage(join(dir, 'oci'), 'v1');
    imageRef = `${registry.host}/remote/app:v1`;
    await runCliOk(['convert', `oci:${join(dir, 'oci')}:v1`, imageRef, '--plain-http', '--level', '1']);
    plainRef = `${registry.host}/plain/app:v1`;
    await execFileP('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${join(dir, 'oci')}:v1`, `docker://${plainRef}`]);
    const registryClient = new RegistryClient({ plainHttp: true });
    try {
      const manifest = JSON.parse((await registryClient.getManifest(parseReference(imageRef))).body.toString());
      layers = manifest.layers;
    } finally {
      await registryClient.close();
    }
    await startDaemon();
  });

  after(async function () {
    this.timeout(60_000);
    client?.close();
    if (daemon && daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon!.once('exit', r));
    }
    // Stop the layer servers the daemon left running by design (their pids are in their status files).
    if (dir) {
      const statusDir = join(dir, 'root', 'state', 'mounts');
      const names = await readdir(statusDir).catch(() => [] as string[]);
      for (const name of names.filter((n) => n.endsWith('.json'))) {
        const { pid } = JSON.parse(await readFile(join(statusDir, name), 'utf8')) as { pid: number };
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      const deadline = Date.now() + 20_000;
      while ((await fuseMountsUnder(dir)).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      for (const mp of await fuseMountsUnder(dir)) await execFileP('umount', ['-l', mp]).catch(() => undefined);
    }
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('commits eStargz layers as remote snapshots and answers ALREADY_EXISTS', async function () {
    let parent = '';
    for (const [i, layer] of layers.entries()) {
      const target = `chain-${i}`;
      await assert.rejects(
        call(client!, 'Prepare', { key: `extract-${i}`, parent, labels: labelsFor(imageRef, layer, target) }),
        (err: grpc.ServiceError) => err.code === grpc.status.ALREADY_EXISTS,
      );
      const stat = await call(client!, 'Stat', { key: target });
      assert.equal(stat.info.kind, 'COMMITTED');
      assert.ok('containerd.io/snapshot/remote' in stat.info.labels);
      assert.equal(stat.info.parent, parent);
      parent = target;
    }
    assert.equal((await fuseMountsUnder(dir)).length, layers.length);
  });

  it('serves the files through the mounts a container would get', async function () {
    const top = `chain-${layers.length - 1}`;
    const view = await call(client!, 'View', { key: 'container-view', parent: top, labels: {} });
    assert.equal(view.mounts[0].type, 'overlay');
    const lowers = (view.mounts[0].options as string[]).find((o) => o.startsWith('lowerdir='))!.slice('lowerdir='.length).split(':');
    // The app layer holds /app/hello.txt.
    const texts = await Promise.all(lowers.map((l) => catFile(join(l, 'app', 'hello.txt')).catch(() => undefined)));
    assert.ok(texts.includes(HELLO_TEXT), `one lower dir serves app/hello.txt: ${JSON.stringify(texts)}`);
  });

  it('falls back for a layer that is not eStargz', async function () {
    const registryClient = new RegistryClient({ plainHttp: true });
    let plainLayer: { digest: string; annotations: Record<string, string> };
    try {
      plainLayer = JSON.parse((await registryClient.getManifest(parseReference(plainRef))).body.toString()).layers[0];
    } finally {
      await registryClient.close();
    }
    const prepared = await call(client!, 'Prepare', { key: 'plain-extract', parent: '', labels: labelsFor(plainRef, plainLayer, 'plain-chain-0') });
    assert.equal(prepared.mounts[0].type, 'bind', 'an ordinary snapshot for containerd to unpack into');
    await assert.rejects(call(client!, 'Stat', { key: 'plain-chain-0' }), (err: grpc.ServiceError) => err.code === grpc.status.NOT_FOUND);
    await call(client!, 'Remove', { key: 'plain-extract' });
  });

  it('keeps serving across kill -9 of the daemon and adopts the mounts on restart', async function () {
    const top = `chain-${layers.length - 1}`;
    daemon!.kill('SIGKILL');
    await new Promise((r) => daemon!.once('exit', r));
    client!.close();
    // While the daemon is down, the layers still answer.
    const mounts = await fuseMountsUnder(dir);
    assert.equal(mounts.length, layers.length);
    const served = await Promise.all(mounts.map((m) => catFile(join(m, 'app', 'hello.txt')).catch(() => undefined)));
    assert.ok(served.includes(HELLO_TEXT));
    await startDaemon();
    const stat = await call(client!, 'Stat', { key: top });
    assert.equal(stat.info.kind, 'COMMITTED');
    assert.deepEqual((await fuseMountsUnder(dir)).sort(), mounts.sort(), 'the same mounts, adopted rather than mounted again');
    const again = await call(client!, 'View', { key: 'view-after-restart', parent: top, labels: {} });
    assert.ok(again.mounts.length === 1);
  });

  it('starts the following layers early from cri.image-layers and adopts them on their Prepare', async function () {
    const ref2 = `${registry.host}/remote/app:v2`;
    await runCliOk(['convert', `oci:${join(dir, 'oci')}:v1`, ref2, '--plain-http', '--level', '1']);
    const all = layers.map((l) => l.digest).join(',');
    const before = (await fuseMountsUnder(dir)).length;
    const first = { ...labelsFor(ref2, layers[0], 'ahead-0'), 'containerd.io/snapshot/cri.image-layers': all };
    await assert.rejects(call(client!, 'Prepare', { key: 'ahead-extract-0', parent: '', labels: first }), (err: grpc.ServiceError) => err.code === grpc.status.ALREADY_EXISTS);
    // The second layer's server was started with the first: wait until it is up.
    const deadline = Date.now() + 20_000;
    while ((await fuseMountsUnder(dir)).length < before + layers.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await fuseMountsUnder(dir)).length, before + layers.length, 'every layer of the image is mounted after the first Prepare');
    const second = { ...labelsFor(ref2, layers[1], 'ahead-1'), 'containerd.io/snapshot/cri.image-layers': layers.slice(1).map((l) => l.digest).join(',') };
    await assert.rejects(call(client!, 'Prepare', { key: 'ahead-extract-1', parent: 'ahead-0', labels: second }), (err: grpc.ServiceError) => err.code === grpc.status.ALREADY_EXISTS);
    assert.equal((await fuseMountsUnder(dir)).length, before + layers.length, 'the early mount was adopted, not mounted again');
    assert.equal((await call(client!, 'Stat', { key: 'ahead-1' })).info.parent, 'ahead-0');
  });

  it('unmounts a remote layer when its snapshot is removed', async function () {
    await call(client!, 'Remove', { key: 'container-view' });
    await call(client!, 'Remove', { key: 'view-after-restart' });
    const before = (await fuseMountsUnder(dir)).length;
    await call(client!, 'Remove', { key: `chain-${layers.length - 1}` });
    assert.equal((await fuseMountsUnder(dir)).length, before - 1);
  });
});
