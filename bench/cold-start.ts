/**
 * The headline benchmark: time from "run this image" on an empty node
 * (fresh containerd root, empty lazypull cache) to the container's first
 * output, for a realistic image (Debian bookworm minbase + python3):
 *
 * - full:  `ctr image pull --plain-http` of the plain gzip image, then `ctr run`
 *          (containerd's overlayfs snapshotter downloads and unpacks everything);
 * - lazy:  `lazypull pull` of the eStargz image through the lazypull snapshotter
 *          (background fetch off), then `ctr run --snapshotter lazypull`.
 *
 * Both read from the same loopback registry. Every repetition starts its own
 * containerd (and, for lazy, its own snapshotter daemon with an empty cache)
 * and stops everything afterwards: daemons, layer servers, mounts.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { measureFetched, type FetchFacts, type PulledLayerFacts } from '../src/demo/fetched-share';
import { leftoverLayerServers, sweepLayerServers } from '../src/demo/layer-servers';
import { readBlobToc } from '../src/format/toc-reader';
import { OciLayout } from '../src/image/oci-layout';
import { layerFromFile, writeImage } from '../src/image/write-image';
import { parseReference } from '../src/registry/reference';
import { RemoteBlob } from '../src/registry/remote-blob';
import { startContainerd, type Containerd } from '../src/sandbox/local-containerd';
import { startLocalRegistry, type LocalRegistry } from '../src/sandbox/local-registry';
import { startLocalSnapshotter, type LocalSnapshotter } from '../src/sandbox/local-snapshotter';
import { benchRegistryClient, convertWithCli, median, nodeBenchmarkMissing, pushImage, settle, withWorkDir, type Stops } from './bench-util';
import { LAZYPULL_CLI } from './lazypull-convert';
import { ensurePythonRootfs, prioritizedFiles, PYTHON_COMMAND, PYTHON_OUTPUT, type PythonRootfs } from './python-rootfs';
import { startupPhases } from './startup-phases';
import { toolVersion } from './tool-version';

const execFileP = promisify(execFile);
const SNAPSHOTTER = 'lazypull';

export interface ColdStartRun {
  mode: 'full' | 'lazy';
  repetition: number;
  /** The pull command alone. */
  pullSeconds: number;
  /** From the start of the pull to the container's first byte of output: the headline. */
  firstOutputSeconds: number;
  /** From the start of the pull to `ctr run` exiting. */
  totalSeconds: number;
  output: string;
  /** Lazy runs: how each layer got into containerd, and what was fetched. */
  layerModes?: string[];
  /** Lazy runs: seconds from the start of the pull to each start-up phase (see startup-phases.ts). */
  phases?: Record<string, number>;
  fetched?: FetchFacts;
}

export interface ColdStartImage {
  rootfs: PythonRootfs;
  plainRef: string;
  estargzRef: string;
  /** Compressed layer bytes of each image. */
  plainBytes: number;
  estargzBytes: number;
  /** Footer + TOC of the eStargz layers, as a mount reads them by Range GETs (not in the layer servers' fetchedBytes). */
  tocBytes: number;
  convertSeconds: number;
}

export interface ColdStartResults {
  date: Date;
  command: string;
  repeat: number;
  image: ColdStartImage;
  runs: ColdStartRun[];
  /** Medians over the repetitions. */
  full: { firstOutputSeconds: number; pullSeconds: number };
  lazy: { firstOutputSeconds: number; pullSeconds: number; fetchedBytes: number; fetchedShare: number };
  /** lazy / full median time to first output: lower is better. */
  ratio: number;
  versions: Record<string, string>;
}

/** `ctr run` of the python command: when the first output arrived and when ctr exited, in seconds since `start`. */
function runTimed(containerd: Containerd, namespace: string, args: string[], start: bigint): Promise<{ firstOutput: number; exit: number; stdout: string }> {
  const since = (): number => Number(process.hrtime.bigint() - start) / 1e9;
  return new Promise((resolve, reject) => {
    const child = spawn('ctr', ['-a', containerd.address, '-n', namespace, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let firstOutput: number | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout.on('data', (d: Buffer) => {
      firstOutput ??= since();
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      const exit = since();
      if (code !== 0) reject(new Error(`ctr ${args.join(' ')} exited ${String(code)}: ${stderr.trim()}`));
      else resolve({ firstOutput: firstOutput ?? exit, exit, stdout });
    });
  });
}

async function prepareImages(work: string, registry: LocalRegistry, rootfs: PythonRootfs, log: (line: string) => void): Promise<ColdStartImage> {
  const layout = join(work, 'oci');
  const layer = await layerFromFile(rootfs.layerPath);
  await writeImage(new OciLayout(layout, 'v1'), [layer], { cmd: PYTHON_COMMAND });
  const plainRef = `${registry.host}/bench/python:gzip`;
  const estargzRef = `${registry.host}/bench/python:esgz`;
  log(`pushing the plain gzip image ${plainRef}`);
  await pushImage(work, plainRef, [layer], { cmd: PYTHON_COMMAND });
  const prioritized = prioritizedFiles(rootfs);
  log(`lazypull convert ${estargzRef} --prioritize (${prioritized.length} start-up paths, ${rootfs.startupFilesFrom}) ...`);
  const converted = await convertWithCli(work, `oci:${layout}:v1`, estargzRef, prioritized);
  const estargzBytes = converted.layers.reduce((n, l) => n + l.size, 0);
  const tocBytes = await tocFetchBytes(work, estargzRef, converted.layers);
  return { rootfs, plainRef, estargzRef, plainBytes: layer.size, estargzBytes, tocBytes, convertSeconds: converted.seconds };
}

/** Bytes a mount reads to know a layer's files: footer and TOC, by Range GETs, summed over the layers. */
async function tocFetchBytes(work: string, ref: string, layers: Array<{ digest: string; size: number }>): Promise<number> {
  const client = benchRegistryClient(work);
  try {
    let bytes = 0;
    for (const l of layers) {
      const blob = new RemoteBlob(client, parseReference(ref), l.digest, l.size);
      await readBlobToc(blob, `${ref} ${l.digest}`);
      bytes += blob.bytesFetched;
    }
    return bytes;
  } finally {
    await client.close();
  }
}

async function fullRun(work: string, image: ColdStartImage, repetition: number, stops: Stops): Promise<ColdStartRun> {
  const containerd = await startContainerd({ parentDir: work });
  stops.add(() => containerd.stop());
  try {
    await settle();
    const start = process.hrtime.bigint();
    await containerd.ctr(['image', 'pull', '--plain-http', image.plainRef], { timeoutMs: 20 * 60_000 });
    const pullSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    const ran = await runTimed(containerd, containerd.namespace, ['run', '--rm', '--runc-root', containerd.runcRoot, image.plainRef, `cold-full-${repetition}`, ...PYTHON_COMMAND], start);
    return { mode: 'full', repetition, pullSeconds, firstOutputSeconds: ran.firstOutput, totalSeconds: ran.exit, output: ran.stdout };
  } finally {
    await containerd.stop();
  }
}

async function lazyRun(work: string, image: ColdStartImage, registryHost: string, repetition: number, stops: Stops): Promise<ColdStartRun> {
  const dir = join(work, `lazy-${repetition}`);
  await mkdir(dir);
  let snapshotter: LocalSnapshotter | undefined;
  let containerd: Containerd | undefined;
  const stopAll = async (): Promise<void> => {
    await containerd?.stop();
    await snapshotter?.stop();
    await sweepLayerServers(dir);
  };
  stops.add(stopAll);
  try {
    // The daemon, its layer servers and the pull CLI write their phase timestamps here.
    const traceFile = join(dir, 'startup-trace.log');
    process.env.LAZYPULL_TRACE = traceFile;
    snapshotter = await startLocalSnapshotter({ dir, plainHttpRegistries: [registryHost], backgroundFetch: false });
    containerd = await startContainerd({ parentDir: work, proxySnapshotters: { [SNAPSHOTTER]: snapshotter.socket } });
    await settle();
    const start = process.hrtime.bigint();
    const startEpochMs = performance.timeOrigin + performance.now();
    // `lazypull pull` as a user runs it: the CLI process, Node start-up included. It asks the node's snapshotter
    // daemon to pull (on a node the daemon's socket is the default one; this daemon's is in the temp dir).
    const { stdout } = await execFileP(
      process.execPath,
      [
        LAZYPULL_CLI, 'pull', image.estargzRef, '--address', containerd.address, '--namespace', containerd.namespace, '--snapshotter', SNAPSHOTTER,
        '--plain-http', '--json', '--snapshotter-address', snapshotter.socket,
      ],
      { maxBuffer: 16 << 20, timeout: 10 * 60_000 },
    );
    const pullSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    const ran = await runTimed(
      containerd,
      containerd.namespace,
      ['run', '--rm', '--runc-root', containerd.runcRoot, '--snapshotter', SNAPSHOTTER, image.estargzRef, `cold-lazy-${repetition}`, ...PYTHON_COMMAND],
      start,
    );
    const ranUntil = Date.now();
    const pulled = JSON.parse(stdout) as { layers: PulledLayerFacts[] };
    const layers = pulled.layers.map((l) => ({ digest: l.digest, size: l.size, mode: l.mode }));
    const fetched = await measureFetched(snapshotter, layers, ranUntil);
    const phases = { ...(await startupPhases(traceFile, startEpochMs)), 'pull exited': pullSeconds, 'first output': ran.firstOutput };
    return {
      mode: 'lazy',
      repetition,
      pullSeconds,
      firstOutputSeconds: ran.firstOutput,
      totalSeconds: ran.exit,
      output: ran.stdout,
      layerModes: layers.map((l) => l.mode),
      fetched,
      phases,
    };
  } finally {
    delete process.env.LAZYPULL_TRACE;
    await stopAll();
    const left = await leftoverLayerServers(dir);
    if (left.processes.length + left.mounts.length > 0) throw new Error(`layer servers left after stopping the snapshotter: ${JSON.stringify(left)}`);
  }
}


export function coldStartAvailable(): string | undefined {
  return nodeBenchmarkMissing('the cold-start benchmark', [['containerd', 'containerd'], ['ctr', 'containerd'], ['runc', 'runc'], ['docker-registry', 'docker-registry']]);
}

export async function benchColdStart(log: (line: string) => void): Promise<ColdStartResults> {
  const repeat = Math.max(1, Number(process.env.LAZYPULL_BENCH_REPEAT ?? '3'));
  const rootfs = await ensurePythonRootfs(log);
  if (rootfs.source === 'synthetic') log(`NOTE: ${rootfs.description}`);
  log(`image: ${rootfs.description}: ${(rootfs.tarSize / 1e6).toFixed(1)} MB unpacked, ${(rootfs.gzSize / 1e6).toFixed(1)} MB gzip`);
  return withWorkDir('lzp-bench-cold-', log, async (work, stops) => {
    const registry = await startLocalRegistry({ parentDir: work });
    stops.add(() => registry.stop());
    const image = await prepareImages(work, registry, rootfs, log);
    log(`eStargz image converted in ${image.convertSeconds.toFixed(1)} s: ${(image.estargzBytes / 1e6).toFixed(1)} MB (gzip ${(image.plainBytes / 1e6).toFixed(1)} MB)`);
    const runs: ColdStartRun[] = [];
    for (let i = 1; i <= repeat; i++) {
      const full = await fullRun(work, image, i, stops);
      log(`#${i} full: first output after ${full.firstOutputSeconds.toFixed(2)} s (pull ${full.pullSeconds.toFixed(2)} s)`);
      const lazy = await lazyRun(work, image, registry.host, i, stops);
      const share = lazy.fetched ? `, fetched ${(lazy.fetched.fetchedBytes / 1e6).toFixed(1)} MB (${(lazy.fetched.fetchedShare * 100).toFixed(1)}%)` : '';
      log(`#${i} lazy: first output after ${lazy.firstOutputSeconds.toFixed(2)} s (pull ${lazy.pullSeconds.toFixed(2)} s, layers ${lazy.layerModes?.join(',')})${share}`);
      for (const r of [full, lazy]) {
        if (r.output !== PYTHON_OUTPUT) throw new Error(`the ${r.mode} run printed ${JSON.stringify(r.output)}, expected ${JSON.stringify(PYTHON_OUTPUT)}`);
      }
      runs.push(full, lazy);
    }
    const fulls = runs.filter((r) => r.mode === 'full');
    const lazies = runs.filter((r) => r.mode === 'lazy');
    const fullFirst = median(fulls.map((r) => r.firstOutputSeconds));
    const lazyFirst = median(lazies.map((r) => r.firstOutputSeconds));
    const fetchedBytes = median(lazies.map((r) => r.fetched?.fetchedBytes ?? 0));
    return {
      date: new Date(),
      command: 'node dist/bench/run.js cold-start',
      repeat,
      image,
      runs,
      full: { firstOutputSeconds: fullFirst, pullSeconds: median(fulls.map((r) => r.pullSeconds)) },
      lazy: {
        firstOutputSeconds: lazyFirst,
        pullSeconds: median(lazies.map((r) => r.pullSeconds)),
        fetchedBytes,
        fetchedShare: median(lazies.map((r) => r.fetched?.fetchedShare ?? 0)),
      },
      ratio: lazyFirst / fullFirst,
      versions: { containerd: await toolVersion('containerd', ['--version']), runc: await toolVersion('runc', ['--version']) },
    };
  });
}
