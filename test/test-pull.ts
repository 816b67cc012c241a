/**
 * `lazypull pull` against the real runtime: a private containerd with the
 * lazypull snapshotter as its proxy plugin, a loopback docker-registry, and
 * runc. Pulled images must run with `ctr run --snapshotter lazypull`, keep
 * their content and snapshots across containerd's garbage collection, and
 * report per layer whether it was mounted lazily or fetched.
 *
 * The snapshotter is the `lazypull snapshotter` daemon when the CLI has it
 * (eStargz layers then mount lazily); otherwise a fallback-only Snapshotter
 * served from a tiny script (every layer is fetched).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { listMounts } from '../src/fs/fuse-mount';
import { cleanupOnExit } from '../src/sandbox/exit-cleanup';
import { CLI_PATH, runCli, runCliOk } from './support/cli';
import { startContainerd, type Containerd } from './support/containerd-fixture';
import { buildBusyboxImage, HELLO_TEXT } from './support/oci-image';
import { startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireBinary, requireFile, requireFuse, requireRoot } from './support/require-env';
import { isProcessAlive as alive } from '../src/util/process-alive';
import type { PulledLayer } from '../src/containerd/pull-image';

const execFileP = promisify(execFile);
const REPO_ROOT = join(__dirname, '..', '..');

/** `--json` prints the pull's layers as the product's PulledLayer. */
type JsonLayer = PulledLayer;

interface JsonPull {
  image: string;
  digest: string;
  mediaType: string;
  manifest: string;
  config: string;
  platform: string;
  snapshotter: string;
  namespace: string;
  chainId: string;
  created: boolean;
  layers: JsonLayer[];
}

/** Reads files of all three layers: the app file, and a file the top layer deletes. */
const PROBE = ['/bin/sh', '-c', 'cat /app/hello.txt; test -e /etc/group && echo group-present || echo group-gone'];
const PROBE_OUTPUT = `${HELLO_TEXT}group-gone\n`;

function sha256(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

/** A plain HTTP GET of a manifest from the loopback registry (never anywhere else). */
async function registryManifest(host: string, repo: string, tag: string): Promise<{ layers: Array<{ digest: string; size: number }>; config: { digest: string } }> {
  assert.ok(host.startsWith('127.0.0.1:'));
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  });
  assert.equal(res.status, 200);
  return (await res.json()) as { layers: Array<{ digest: string; size: number }>; config: { digest: string } };
}

interface RunningSnapshotter {
  socket: string;
  root: string;
  /** True for the `lazypull snapshotter` daemon (eStargz layers mount lazily). */
  remote: boolean;
  logs(): Promise<string>;
  stop(): Promise<void>;
}

const FALLBACK_SCRIPT = `
const [repo, root, socket] = process.argv.slice(2);
const { Snapshotter } = require(repo + '/dist/src/snapshotter/snapshotter');
const { serveSnapshots } = require(repo + '/dist/src/snapshotter/grpc-service');
(async () => {
  const s = await Snapshotter.open({ root }); // no remote layers: every layer falls back
  await serveSnapshots(s, socket, (e) => console.error(JSON.stringify(e)));
  console.error(JSON.stringify({ event: 'ready' }));
})().catch((err) => { console.error(err); process.exit(1); });
`;


async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Layer servers the daemon started (one `lazypull mount` process per lazy layer) and FUSE mounts under `root`. */
async function stopLayerServers(root: string): Promise<void> {
  const statusDir = join(root, 'state', 'mounts');
  let files: string[] = [];
  try {
    files = await readdir(statusDir);
  } catch {
    files = [];
  }
  for (const file of files.filter((f) => f.endsWith('.json'))) {
    try {
      const { pid } = JSON.parse(await readFile(join(statusDir, file), 'utf8')) as { pid: number };
      if (Number.isInteger(pid) && alive(pid)) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
        if (alive(pid)) process.kill(pid, 'SIGKILL');
      }
    } catch {
      // a status file half gone: its server is gone too
    }
  }
  const mounts = (await listMounts()).filter((m) => m.mountpoint.startsWith(`${root}/`)).reverse();
  for (const m of mounts) {
    await execFileP('umount', ['-l', m.mountpoint]).catch(() => undefined);
  }
}

async function startSnapshotter(work: string, registryHost: string, useDaemon: boolean): Promise<RunningSnapshotter> {
  const root = join(work, 'snapshotter');
  const socket = join(work, 'lazypull.sock');
  const logPath = join(work, 'snapshotter.log');
  let args: string[];
  if (useDaemon) {
    const config = join(work, 'snapshotter.toml');
    await writeFile(config, `log_level = "debug"\n`);
    args = [CLI_PATH, 'snapshotter', '--config', config, '--root', root, '--address', socket, '--plain-http-registry', registryHost];
  } else {
    const script = join(work, 'fallback-snapshotter.js');
    await writeFile(script, FALLBACK_SCRIPT);
    args = [script, REPO_ROOT, root, socket];
  }
  const logFd = openSync(logPath, 'a');
  const child = spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const unregister = cleanupOnExit(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const logs = async (): Promise<string> => (await readFile(logPath, 'utf8').catch(() => '')).slice(-4000);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      if (!(await waitExit(child, 10_000))) {
        child.kill('SIGKILL');
        await waitExit(child, 5_000);
      }
    }
    unregister();
    if (useDaemon) await stopLayerServers(root);
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`snapshotter exited during start-up:\n${await logs()}`);
    const st = await stat(socket).catch(() => undefined);
    if (st?.isSocket() && (await logs()).includes(useDaemon ? '"started"' : '"ready"')) break;
    if (i > 300) {
      await stop();
      throw new Error(`snapshotter did not start:\n${await logs()}`);
    }
    await sleep(100);
  }
  return { socket, root, remote: useDaemon, logs, stop };
}

describe('lazypull pull: images into containerd through the lazypull snapshotter', function () {
  this.timeout(300_000);
  let work = '';
  let registry: RegistryFixture | undefined;
  let snapshotter: RunningSnapshotter | undefined;
  let containerd: Containerd | undefined;
  let plainRef = '';
  let estargzRef = '';
  let counter = 0;
  let imageDir = '';

  before(async function () {
    requireRoot(this);
    for (const bin of ['containerd', 'ctr', 'runc', 'docker-registry', 'skopeo']) requireBinary(this, bin);
    requireFile(this, CLI_PATH, 'the lazypull CLI (run tsc)');
    const help = await runCli(['--help']);
    // LAZYPULL_TEST_SNAPSHOTTER=fallback forces the fallback-only snapshotter even when the daemon exists.
    const useDaemon = process.env.LAZYPULL_TEST_SNAPSHOTTER !== 'fallback' && /^\s+snapshotter\b/m.test(help.stdout);
    if (useDaemon) requireFuse(this);

    work = await mkdtemp(join(tmpdir(), 'lzp-pull-'));
    const image = await buildBusyboxImage(join(work, 'src'), 'v1');
    imageDir = image.dir;
    registry = await startRegistry();
    plainRef = `${registry.host}/pull/plain:v1`;
    estargzRef = `${registry.host}/pull/estargz:v1`;
    await execFileP('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${image.dir}:v1`, `docker://${plainRef}`], { timeout: 120_000 });
    await runCliOk(['convert', `oci:${image.dir}:v1`, estargzRef, '--plain-http'], { timeoutMs: 120_000 });

    snapshotter = await startSnapshotter(work, registry.host, useDaemon);
    containerd = await startContainerd({ proxySnapshotters: { lazypull: snapshotter.socket } });
  });

  after(async function () {
    await containerd?.stop();
    await snapshotter?.stop();
    await registry?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  function c(): Containerd {
    return containerd as Containerd;
  }

  async function pull(ref: string, extra: string[] = [], namespace = c().namespace): Promise<{ code: number; stdout: string; stderr: string }> {
    return runCli(['pull', ref, '--address', c().address, '--namespace', namespace, '--plain-http', ...extra], { timeoutMs: 240_000 });
  }

  async function pullJson(ref: string, namespace = c().namespace): Promise<JsonPull> {
    const r = await pull(ref, ['--json'], namespace);
    assert.equal(r.code, 0, `pull failed: ${r.stderr}\nsnapshotter log:\n${await (snapshotter as RunningSnapshotter).logs()}`);
    return JSON.parse(r.stdout) as JsonPull;
  }

  async function run(ref: string, cmd: string[] = [], namespace = c().namespace): Promise<string> {
    const r = await c().ctr(['run', '--rm', '--snapshotter', 'lazypull', '--runc-root', c().runcRoot, ref, `pull-${++counter}`, ...cmd], {
      namespace,
      timeoutMs: 120_000,
    });
    return r.stdout;
  }

  /** Run containerd's garbage collector now: removing a lease with --sync collects synchronously. */
  async function collectGarbage(namespace: string): Promise<void> {
    const id = `lzp-gc-${++counter}`;
    await c().ctr(['leases', 'create', '--id', id], { namespace });
    await c().ctr(['leases', 'rm', '--sync', id], { namespace });
  }

  it('(a) a plain gzip image: every layer fetched; ctr runs it and lists it; a second pull finds everything present', async function () {
    const r = await pull(plainRef);
    assert.equal(r.code, 0, r.stderr);
    const manifest = await registryManifest((registry as RegistryFixture).host, 'pull/plain', 'v1');
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('  '));
    assert.equal(lines.length, manifest.layers.length, r.stdout);
    for (const [i, layer] of manifest.layers.entries()) assert.match(lines[i]!, new RegExp(`^\\s+fetched\\s+${layer.digest} `), r.stdout);
    assert.match(r.stdout, new RegExp(`^${plainRef.replace(/[.]/g, '\\.')}: sha256:[0-9a-f]{64} .*3 layers: 0 lazy, 3 fetched`, 'm'));

    const images = await c().ctr(['images', 'ls', '-q']);
    assert.ok(images.stdout.split('\n').includes(plainRef), images.stdout);
    assert.equal((await c().ctr(['leases', 'ls', '-q'])).stdout.trim(), '', 'the pull lease is gone');

    // What the image record, the gc.ref labels and the snapshots hold survives a garbage collection.
    await collectGarbage(c().namespace);
    assert.equal(await run(plainRef), HELLO_TEXT);
    assert.equal(await run(plainRef, PROBE), PROBE_OUTPUT);

    const again = await pull(plainRef);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /3 layers: 0 lazy, 0 fetched, 3 existing/);
    assert.equal(again.stdout.split('\n').filter((l) => /^\s+existing\s+sha256:/.test(l)).length, 3, again.stdout);
  });

  it('(b) an eStargz image runs too (lazy with the lazypull daemon, fetched with a fallback-only snapshotter)', async function () {
    const s = snapshotter as RunningSnapshotter;
    const result = await pullJson(estargzRef);
    const expected = s.remote ? 'lazy' : 'fetched';
    assert.deepEqual(result.layers.map((l) => l.mode), result.layers.map(() => expected), `modes; snapshotter log:\n${await s.logs()}`);
    assert.equal(await run(estargzRef), HELLO_TEXT);
    assert.equal(await run(estargzRef, PROBE), PROBE_OUTPUT);

    const snapshots = await c().ctr(['snapshots', '--snapshotter', 'lazypull', 'ls']);
    for (const layer of result.layers) assert.match(snapshots.stdout, new RegExp(`^${layer.chainId}\\s.*Committed`, 'm'), snapshots.stdout);
  });

  it('(c) --json lists every layer with digest, diff ID, chain ID and mode; content carries the gc labels', async function () {
    // A fresh namespace: nothing is present there yet.
    const namespace = `${c().namespace}-json`;
    const result = await pullJson(plainRef, namespace);
    const manifest = await registryManifest((registry as RegistryFixture).host, 'pull/plain', 'v1');
    assert.equal(result.image, plainRef);
    assert.equal(result.namespace, namespace);
    assert.equal(result.snapshotter, 'lazypull');
    assert.equal(result.config, manifest.config.digest);
    assert.equal(result.created, true);
    assert.deepEqual(result.layers.map((l) => l.digest), manifest.layers.map((l) => l.digest));
    assert.deepEqual(result.layers.map((l) => l.size), manifest.layers.map((l) => l.size));
    let chain = '';
    for (const [i, layer] of result.layers.entries()) {
      assert.equal(layer.index, i);
      assert.equal(layer.mode, 'fetched');
      assert.match(layer.diffId, /^sha256:[0-9a-f]{64}$/);
      chain = i === 0 ? layer.diffId : sha256(`${chain} ${layer.diffId}`);
      assert.equal(layer.chainId, chain);
    }
    assert.equal(result.chainId, chain);

    const content = (await c().ctr(['content', 'ls'], { namespace })).stdout;
    const line = (digest: string): string => content.split('\n').find((l) => l.startsWith(`${digest}\t`) || l.startsWith(`${digest} `)) ?? '';
    assert.match(line(result.config), new RegExp(`containerd.io/gc.ref.snapshot.lazypull=${chain}`), content);
    assert.match(line(result.manifest), /containerd\.io\/gc\.ref\.content\.config=/, content);
    assert.match(line(result.manifest), /containerd\.io\/gc\.ref\.content\.l\.2=/, content);
    assert.match(line(result.manifest), /containerd\.io\/distribution\.source\.127\.0\.0\.1:\d+=pull\/plain/, content);

    await collectGarbage(namespace);
    assert.equal(await run(plainRef, [], namespace), HELLO_TEXT);
    await c().ctr(['images', 'rm', '--sync', plainRef], { namespace });
  });

  it('(e) through the daemon: it pulls for the CLI with the same output; errors print the same; without a pull service the CLI pulls itself', async function () {
    const s = snapshotter as RunningSnapshotter;
    const viaDaemon = ['--snapshotter-address', s.socket];
    const pullEvents = async (): Promise<string[]> => (await readFile(join(work, 'snapshotter.log'), 'utf8')).split('\n').filter((l) => l.includes('"event":"pull"'));

    if (!s.remote) {
      // The fallback-only snapshotter serves containerd's Snapshots service alone.
      const r = await pull(plainRef, viaDaemon, `${c().namespace}-nopull`);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stderr.includes(`no pull service at ${s.socket} (no pull service); pulling in this process`), r.stderr);
      assert.match(r.stdout, /3 layers: 0 lazy, 3 fetched/);
      return;
    }

    // An image no earlier test pulled (other gzip level: other diff IDs, so no layer is on the node yet),
    // pulled by the daemon and by the CLI itself, each into a namespace of its own.
    const freshRef = `${(registry as RegistryFixture).host}/pull/estargz-daemon:v1`;
    await runCliOk(['convert', `oci:${imageDir}:v1`, freshRef, '--plain-http', '--level', '1'], { timeoutMs: 120_000 });
    const before = (await pullEvents()).length;
    const fuseMounts = async (): Promise<number> => (await listMounts()).filter((m) => m.mountpoint.startsWith(`${s.root}/`) && m.fstype.startsWith('fuse')).length;
    const mountsBefore = await fuseMounts();
    const daemonNs = `${c().namespace}-daemon`;
    const inProcessNs = `${c().namespace}-inprocess`;
    const byDaemon = await pull(freshRef, [...viaDaemon, '--json'], daemonNs);
    assert.equal(byDaemon.code, 0, `${byDaemon.stderr}\n${await s.logs()}`);
    const mountsAfter = await fuseMounts();
    const events = await pullEvents();
    assert.equal(events.length, before + 1, 'the daemon logged one pull');
    assert.ok(events[events.length - 1]!.includes(freshRef), events[events.length - 1]);
    const byCli = await pull(freshRef, ['--no-daemon', '--json'], inProcessNs);
    assert.equal(byCli.code, 0, byCli.stderr);
    assert.equal((await pullEvents()).length, before + 1, '--no-daemon pulls in the CLI');
    const daemonJson = JSON.parse(byDaemon.stdout) as JsonPull & { seconds: number };
    const cliJson = JSON.parse(byCli.stdout) as JsonPull & { seconds: number };
    assert.deepEqual(Object.keys(daemonJson).sort(), Object.keys(cliJson).sort());
    const comparable = (j: JsonPull & { seconds: number }): unknown => ({ ...j, namespace: undefined, seconds: undefined });
    assert.deepEqual(comparable(daemonJson), comparable(cliJson));
    assert.equal(daemonJson.namespace, daemonNs);
    assert.deepEqual(daemonJson.layers.map((l) => l.mode), daemonJson.layers.map(() => 'lazy'));
    // The daemon started mounting each layer before containerd's Prepare, and each Prepare took that mount: one FUSE mount a layer.
    const ahead = (await readFile(join(work, 'snapshotter.log'), 'utf8')).split('\n').filter((l) => l.includes('"event":"mount_ahead"'));
    for (const layer of daemonJson.layers) assert.ok(ahead.some((l) => l.includes(layer.digest)), `mount_ahead for ${layer.digest}:\n${ahead.join('\n')}`);
    assert.equal(mountsAfter - mountsBefore, daemonJson.layers.length, 'one FUSE mount per layer: no mount left unclaimed');
    assert.equal(await run(freshRef, PROBE, daemonNs), PROBE_OUTPUT);

    // Text output, a relative containerd socket (resolved where the user is, not where the daemon runs),
    // and CONTAINERD_NAMESPACE as ctr reads it.
    const textNs = `${c().namespace}-daemon-text`;
    const relative = await runCli(['pull', plainRef, '--address', basename(c().address), '--plain-http', ...viaDaemon], {
      cwd: dirname(c().address),
      env: { CONTAINERD_NAMESPACE: textNs },
      timeoutMs: 240_000,
    });
    assert.equal(relative.code, 0, relative.stderr);
    assert.equal((await pullEvents()).length, before + 2);
    const manifest = await registryManifest((registry as RegistryFixture).host, 'pull/plain', 'v1');
    const lines = relative.stdout.split('\n').filter((l) => l.startsWith('  '));
    for (const [i, layer] of manifest.layers.entries()) assert.match(lines[i]!, new RegExp(`^\\s+fetched\\s+${layer.digest} \\(${layer.size} bytes\\)$`), relative.stdout);
    assert.match(relative.stdout, new RegExp(`^${plainRef.replace(/[.]/g, '\\.')}: sha256:[0-9a-f]{64} .*3 layers: 0 lazy, 3 fetched, 0 existing; snapshotter lazypull, namespace ${textNs}, [0-9.]+ s$`, 'm'));
    assert.equal(await run(plainRef, [], textNs), HELLO_TEXT);

    // Errors come back as the CLI prints them, and the daemon stays up.
    const missing = await pull(`${(registry as RegistryFixture).host}/pull/missing:v9`, viaDaemon);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /^lazypull: .*pull\/missing.*\[LAZYPULL_ERR_REGISTRY_NOT_FOUND\]\n$/s);
    const noSocket = join(work, 'no-such-dir', 'containerd.sock');
    const noContainerd = await runCli(['pull', plainRef, '--address', noSocket, '--plain-http', ...viaDaemon]);
    assert.notEqual(noContainerd.code, 0);
    assert.ok(noContainerd.stderr.includes(`containerd socket ${noSocket} does not exist`), noContainerd.stderr);
    assert.match((await s.logs()), /"event":"pull_failed"/);
    assert.equal((await pull(estargzRef, [...viaDaemon, '--json'], daemonNs)).code, 0, 'the daemon still pulls');

    // A socket that is not there: said, and the CLI pulls itself.
    const gone = await pull(plainRef, ['--snapshotter-address', join(work, 'no-daemon.sock')], `${c().namespace}-nodaemon`);
    assert.equal(gone.code, 0, gone.stderr);
    assert.ok(gone.stderr.includes(`no pull service at ${join(work, 'no-daemon.sock')} (ENOENT); pulling in this process`), gone.stderr);
    assert.match(gone.stdout, /3 layers: 0 lazy, 3 fetched/);
  });

  it('(d) errors: an unknown image names the reference; a missing socket or snapshotter is explained', async function () {
    const missingRef = `${(registry as RegistryFixture).host}/pull/missing:v9`;
    const missing = await pull(missingRef);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /^lazypull: /);
    assert.ok(missing.stderr.includes('pull/missing'), missing.stderr);
    assert.match(missing.stderr, /LAZYPULL_ERR_REGISTRY_NOT_FOUND/);
    assert.ok(!(await c().ctr(['images', 'ls', '-q'])).stdout.includes(missingRef), 'no image record for a failed pull');

    const socket = join(work, 'no-such-dir', 'containerd.sock');
    const noSocket = await runCli(['pull', plainRef, '--address', socket, '--plain-http']);
    assert.notEqual(noSocket.code, 0);
    assert.ok(noSocket.stderr.includes(`containerd socket ${socket} does not exist`), noSocket.stderr);

    // A malformed reference is refused before containerd is contacted.
    const badRef = await runCli(['pull', 'Bad/Name:v1', '--address', socket]);
    assert.notEqual(badRef.code, 0);
    assert.match(badRef.stderr, /invalid image reference "Bad\/Name:v1".*LAZYPULL_ERR_REFERENCE_INVALID/);

    const noSnapshotter = await pull(plainRef, ['--snapshotter', 'no-such-snapshotter']);
    assert.notEqual(noSnapshotter.code, 0);
    assert.match(noSnapshotter.stderr, /no-such-snapshotter/);
    assert.doesNotMatch(noSnapshotter.stderr, /\n\s+at /, 'no stack trace');
  });
});
