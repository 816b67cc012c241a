/**
 * `lazypull demo` as a user runs it: a child process that builds, converts,
 * reads TOCs by Range GETs, runs the image with a private containerd after a
 * full pull and lazily through the lazypull snapshotter, and cleans up, also
 * when interrupted: no daemon, layer server or FUSE mount is left. Needs
 * root, FUSE and the real runtime pieces.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { DemoReport } from '../src/demo/run-demo';
import { GREETING } from '../src/demo/sample-image';
import { CLI_PATH, runCli } from './support/cli';
import { requireBinary, requireFile, requireFuse, requireRoot } from './support/require-env';

/** Processes (containerd, shims, docker-registry) whose command line names `dir`. */
function processesMentioning(dir: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmdline.includes(dir)) found.push(`${pid}: ${cmdline}`);
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith(dir));
}

/** FUSE mounts anywhere under `dir`, from /proc/mounts. */
function fuseMountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f[2]?.startsWith('fuse') && f[1]?.startsWith(dir))
    .map((f) => f[1] ?? '');
}

/** `lazypull mount` layer servers (any, not only the demo's: none should be running during this test file). */
function layerServers(dir: string): string[] {
  return processesMentioning(CLI_PATH).filter((p) => / mount /.test(p) && p.includes(dir));
}

function assertNothingLeft(workDir: string, opts: { dirRemoved: boolean }): void {
  assert.match(workDir, /lazypull-demo-/);
  assert.deepEqual(layerServers(workDir), [], 'no lazypull mount process of the demo is left');
  assert.deepEqual(fuseMountsUnder(workDir), [], 'no FUSE mount is left');
  assert.deepEqual(processesMentioning(workDir), [], 'no containerd, shim, snapshotter or docker-registry of the demo is left');
  assert.deepEqual(mountsUnder(workDir), [], 'no mounts are left');
  assert.equal(existsSync(workDir), !opts.dirRemoved, opts.dirRemoved ? 'the temp dir is removed' : 'the temp dir is kept');
}

describe('lazypull demo', function () {
  this.timeout(120_000);

  before(function () {
    requireRoot(this);
    requireFuse(this);
    for (const bin of ['docker-registry', 'containerd', 'ctr', 'runc']) requireBinary(this, bin);
    requireFile(this, '/bin/busybox', 'a static busybox (Debian busybox-static)');
    requireFile(this, CLI_PATH, 'the lazypull CLI (run tsc)');
  });

  it('--json: converts every layer, knows each file tree from a small TOC fetch, runs the image fully and lazily, leaves nothing', async () => {
    const result = await runCli(['demo', '--json'], { timeoutMs: 90_000 });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '', 'nothing but the JSON object');
    const lines = result.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 1, 'one JSON line');
    const report = JSON.parse(lines[0]) as DemoReport;

    assert.equal(report.runs.length, 2);
    const [full, lazy] = report.runs;
    assert.equal(full?.mode, 'full');
    assert.equal(full?.output, GREETING, 'the container printed the greeting');
    assert.equal(lazy?.mode, 'lazy');
    assert.equal(lazy?.output, GREETING, 'the lazily started container printed the same greeting');
    assert.notEqual(lazy?.namespace, full?.namespace, 'the lazy run pulls into a fresh namespace');
    assert.deepEqual(lazy?.layers?.map((l) => l.mode), ['lazy', 'lazy'], 'both eStargz layers were mounted lazily');
    assert.ok(lazy.pullSeconds > 0 && lazy.runSeconds > 0);
    const imageBytes = report.layers.reduce((n, l) => n + l.estargz.size, 0);
    assert.equal(lazy.imageBytes, imageBytes, 'imageBytes is the sum of the eStargz layer sizes');
    assert.ok(lazy.fetchedBytes !== undefined && lazy.fetchedBytes > 0, 'the container read something through the lazy layers');
    assert.ok(lazy.fetchedShare !== undefined && lazy.fetchedShare < 0.2, `fetched share ${lazy.fetchedShare}`);
    assert.ok(Math.abs(lazy.fetchedShare - lazy.fetchedBytes / imageBytes) < 1e-9);
    assert.ok(report.lazyVsFull > 0);
    assert.equal(report.image.expectedOutput, GREETING);
    assert.match(report.image.reference, /^127\.0\.0\.1:\d+\/demo\/hello:v1$/);

    assert.equal(report.layers.length, 2);
    for (const layer of report.layers) {
      assert.equal(layer.estargz.converted, true, `layer ${layer.index} converted`);
      assert.notEqual(layer.estargz.digest, layer.original.digest);
      assert.match(layer.estargz.tocDigest, /^sha256:[0-9a-f]{64}$/);
      assert.ok(layer.files >= 5, `layer ${layer.index} lists its files (${layer.files})`);
      assert.ok(layer.tocFetch.bytes > 0 && layer.tocFetch.bytes < 16 * 1024, `layer ${layer.index}: TOC fetch of ${layer.tocFetch.bytes} bytes`);
      assert.ok(layer.tocFetch.share < 0.02, `layer ${layer.index}: TOC is ${(layer.tocFetch.share * 100).toFixed(2)}% of the layer`);
      assert.equal(layer.tocFetch.requests, 2, 'one Range GET for the footer, one for the TOC');
    }
    assert.ok(report.layers[1] !== undefined && report.layers[1].estargz.size > 20 * 1024 * 1024, 'the app layer carries MBs the container never reads');

    assert.equal(report.kept, false);
    assert.equal(report.workDirRemoved, true);
    assertNothingLeft(report.workDir, { dirRemoved: true });
  });

  it('--keep: prints progress and where the kept temp dir is, with the daemons stopped', async () => {
    const result = await runCli(['demo', '--keep'], { timeoutMs: 90_000 });
    assert.equal(result.code, 0, result.stderr);
    const kept = /kept (\/\S+lazypull-demo-\S+)/.exec(result.stdout)?.[1];
    assert.ok(kept, result.stdout);
    try {
      assert.match(result.stdout, /\[1\/6\] built sample image/);
      assert.match(result.stdout, /layer 2: \d+ files known after fetching [\d.]+ KiB of [\d.]+ KiB \([\d.]+%\)/);
      assert.equal(result.stdout.split(GREETING.trimEnd()).length - 1, 2, 'shows what the container printed, after the full and the lazy pull');
      assert.match(result.stdout, /\[5\/6\] lazypull snapshotter .*\n\s+pulled in [\d.]+ s \(layers: lazy, lazy\)/);
      assert.match(result.stdout, /fetched [\d.]+ MiB of the image's [\d.]+ MiB \([\d.]+%\)/);
      assert.match(result.stdout, /pull \+ run: lazy [\d.]+ s, full [\d.]+ s/);
      assertNothingLeft(kept, { dirRemoved: false });
      assert.ok(existsSync(`${kept}/image/index.json`), 'the sample image is there to look at');
    } finally {
      await rm(kept, { recursive: true, force: true });
    }
  });

  /** Start the demo, send `signal` once its output matches `when`; its output and exit code. */
  async function interruptDemo(when: RegExp, signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string; workDir: string }> {
    const child = spawn(process.execPath, [CLI_PATH, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (when.test(stdout)) resolve();
      });
      void exited.then(() => resolve());
    });
    child.kill(signal);
    const code = await exited;
    const workDir = /working in (\S+)/.exec(stdout)?.[1];
    assert.ok(workDir, stdout);
    return { code, stdout, stderr, workDir };
  }

  it('cleans up and exits 143 when terminated halfway', async () => {
    // Registry up and conversion under way: a moment with a daemon running and files being written.
    const { code, stderr, workDir } = await interruptDemo(/\[2\/6\]/, 'SIGTERM');
    assert.equal(code, 143, `exit code; stderr: ${stderr}`);
    assert.match(stderr, /interrupted, cleaned up/);
    assertNothingLeft(workDir, { dirRemoved: true });
  });

  it('stops the snapshotter, its layer servers and their FUSE mounts on Ctrl-C while the lazy container runs', async () => {
    // Layers mounted lazily, container starting: the snapshotter daemon, its layer servers and FUSE mounts all exist.
    const { code, stdout, stderr, workDir } = await interruptDemo(/\[5\/6\][^\n]*\n\s+pulled in [^\n]*running it/, 'SIGINT');
    assert.match(stdout, /layers: lazy, lazy/);
    assert.equal(code, 130, `exit code; stderr: ${stderr}`);
    assert.match(stderr, /interrupted, cleaned up/);
    assertNothingLeft(workDir, { dirRemoved: true });
  });
});
