/**
 * `lazypull demo`, the product's story on one machine with loopback only:
 * build a sample image, convert it to eStargz into a private registry, show
 * that each layer's file tree is known after fetching only its TOC by HTTP
 * Range GETs, then run it with a private containerd twice: after a full
 * pull, and lazily through the lazypull snapshotter (its own daemon and
 * layer servers, background fetch off), with the times and the share of
 * the image the lazy run fetched. Everything lives in one temp dir and is
 * torn down at the end, on failure and on Ctrl-C: the caller runs the
 * Teardown on a signal, which stops the daemons so the running step fails
 * fast, and runDemo removes the dir once unwound.
 */
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertImage, type ConvertedLayer } from '../convert/convert-image';
import { isLazypullError, LazypullError, toError } from '../errors';
import { readBlobToc } from '../format/toc-reader';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../format/toc';
import { hostPlatform } from '../image/image-types';
import { OciLayout } from '../image/oci-layout';
import { RegistryRepository } from '../image/registry-repository';
import { RegistryClient } from '../registry/client';
import { parseReference } from '../registry/reference';
import { RemoteBlob } from '../registry/remote-blob';
import { cleanupOnExit } from '../sandbox/exit-cleanup';
import { startContainerd, type Containerd } from '../sandbox/local-containerd';
import { REGISTRY_BINARY, startLocalRegistry } from '../sandbox/local-registry';
import { startLocalSnapshotter } from '../sandbox/local-snapshotter';
import { requireBinary, requireRoot } from '../sandbox/prerequisites';
import { sweepCgroups } from '../sandbox/runtime-leftovers';
import { leftoverLayerServers, requireFuse, sweepLayerServers } from './layer-servers';
import { FULL_PULL, LAZY_SNAPSHOTTER, lazyPullMode, pullAndRun, type RunMode, type RunResult } from './run-modes';
import { buildSampleImage, GREETING, SAMPLE_CMD, type SampleLayer } from './sample-image';
import type { Teardown } from './teardown';
import { timed } from './timed';

const STEPS = 6;
const TAG = 'v1';
const REPOSITORY = 'demo/hello';

export interface DemoOptions {
  /** Leave the temp dir (image, registry storage, containerd root and log) for inspection. */
  keep: boolean;
  /** One progress line; a no-op in --json mode. */
  log: (line: string) => void;
  teardown: Teardown;
}

export interface DemoLayer {
  index: number;
  name: string;
  /** Files, dirs and links the TOC lists (no chunk entries, no landmarks). */
  files: number;
  original: { digest: string; size: number };
  estargz: { digest: string; size: number; tocDigest: string; uncompressedSize: number; converted: boolean };
  /** Footer and TOC read over HTTP Range GETs. */
  tocFetch: { bytes: number; requests: number; share: number };
}

export interface DemoReport {
  workDir: string;
  kept: boolean;
  /** false only with --keep. */
  workDirRemoved: boolean;
  image: { reference: string; manifestDigest: string; cmd: string[]; expectedOutput: string };
  buildSeconds: number;
  convertSeconds: number;
  layers: DemoLayer[];
  /** The full pull first, then the lazy one (with fetchedBytes, imageBytes, fetchedShare). */
  runs: RunResult[];
  /** Lazy (pull + run seconds) / full (pull + run seconds): below 1, the lazy run started sooner. */
  lazyVsFull: number;
  totalSeconds: number;
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(2)} MiB`;
}

function step(n: number, text: string): string {
  return `[${n}/${STEPS}] ${text}`;
}

/** Fail early, before anything starts, with the package to install. */
function checkPrerequisites(): void {
  requireRoot('lazypull demo');
  requireBinary(REGISTRY_BINARY, 'docker-registry');
  requireBinary('containerd', 'containerd');
  requireBinary('ctr', 'containerd');
  requireBinary('runc', 'runc');
  requireFuse();
}

/** Read only the footer and TOC of each converted layer from the registry. */
async function fetchTocs(client: RegistryClient, ref: string, sample: SampleLayer[], converted: ConvertedLayer[], log: DemoOptions['log']): Promise<DemoLayer[]> {
  const layers: DemoLayer[] = [];
  for (const [i, layer] of converted.entries()) {
    const blob = new RemoteBlob(client, parseReference(ref), layer.digest, layer.size);
    const { toc } = await readBlobToc(blob, `${ref} layer ${i + 1}`);
    const files = toc.entries.filter((e) => e.type !== 'chunk' && e.name !== PREFETCH_LANDMARK && e.name !== NO_PREFETCH_LANDMARK).length;
    const share = blob.bytesFetched / layer.size;
    log(`      layer ${i + 1}: ${files} files known after fetching ${kib(blob.bytesFetched)} of ${kib(layer.size)} (${(share * 100).toFixed(1)}%)`);
    layers.push({
      index: i + 1,
      name: sample[i]?.name ?? `layer ${i + 1}`,
      files,
      original: { digest: layer.sourceDigest, size: sample[i]?.size ?? 0 },
      estargz: { digest: layer.digest, size: layer.size, tocDigest: layer.tocDigest, uncompressedSize: layer.uncompressedSize, converted: layer.converted },
      tocFetch: { bytes: blob.bytesFetched, requests: blob.requests, share },
    });
  }
  return layers;
}

export async function runDemo(opts: DemoOptions): Promise<DemoReport> {
  checkPrerequisites();
  const workDir = await mkdtemp(join(tmpdir(), 'lazypull-demo-'));
  const forgetWorkDir = opts.keep ? () => undefined : cleanupOnExit(() => rmSync(workDir, { recursive: true, force: true }));
  let cleaning: Promise<void> | undefined;
  /**
   * Daemons first, the dir last: only once the steps have unwound, so nothing
   * still writes into it (a signal stops the daemons while a step runs).
   */
  const cleanUp = (): Promise<void> =>
    (cleaning ??= (async () => {
      await opts.teardown.run();
      if (!opts.keep) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
      forgetWorkDir();
      if (opts.teardown.failures.length > 0) {
        throw new LazypullError('LAZYPULL_ERR_SANDBOX', `clean-up incomplete: ${opts.teardown.failures.join('; ')}`, { workDir });
      }
    })());
  try {
    return await demoSteps(workDir, opts, cleanUp);
  } catch (err) {
    // The failed step's error is the one to report; a failed clean-up is added to it.
    const cleanUpError = await cleanUp().then(() => undefined, toError);
    // A failed clean-up after the last step is the error itself: report it once.
    if (cleanUpError === undefined || cleanUpError === err) throw err;
    const first = toError(err);
    const code = isLazypullError(first) ? first.code : 'LAZYPULL_ERR_SANDBOX';
    throw new LazypullError(code, `${first.message}; ${cleanUpError.message}`, isLazypullError(first) ? first.details : { workDir }, { cause: first });
  }
}

async function demoSteps(workDir: string, opts: DemoOptions, cleanUp: () => Promise<void>): Promise<DemoReport> {
  const { log, teardown } = opts;
  const t0 = process.hrtime.bigint();
  /** After a signal started the teardown, start nothing new. */
  const interrupted = (): void => {
    if (teardown.begun) throw new LazypullError('LAZYPULL_ERR_SANDBOX', 'interrupted');
  };
  log(`lazypull demo, working in ${workDir}`);

  const imageDir = join(workDir, 'image');
  const built = await timed(() => buildSampleImage(imageDir, TAG));
  const sample = built.value;
  const total = sample.layers.reduce((n, l) => n + l.size, 0);
  log(step(1, `built sample image oci:${imageDir}:${TAG}: ${sample.layers.length} layers, ${mib(total)} gzip (${built.seconds.toFixed(1)} s)`));
  for (const [i, l] of sample.layers.entries()) log(`      layer ${i + 1} (${l.name}): ${l.entries} entries, ${mib(l.size)}`);

  interrupted();
  const registry = await startLocalRegistry({ parentDir: workDir, keepDir: opts.keep });
  teardown.add('registry', () => registry.stop());
  interrupted();
  const ref = `${registry.host}/${REPOSITORY}:${TAG}`;
  // The private registry has no auth: do not let a user's docker config.json get involved.
  const client = new RegistryClient({ plainHttp: true, dockerConfigPath: join(workDir, 'no-docker-config.json') });
  teardown.add('registry client', () => client.close());
  log(step(2, `registry on ${registry.host}; converting to eStargz -> ${ref}`));
  const conversion = await timed(() =>
    convertImage(new OciLayout(imageDir, TAG), new RegistryRepository(client, parseReference(ref)), { platforms: [hostPlatform()], workDir }),
  );
  const converted = conversion.value.manifests[0]?.layers ?? [];
  for (const [i, l] of converted.entries()) {
    log(`      layer ${i + 1}: ${mib(sample.layers[i]?.size ?? 0)} tar.gz -> ${mib(l.size)} eStargz, TOC ${l.tocDigest}`);
  }
  log(`      converted and pushed in ${conversion.seconds.toFixed(1)} s`);

  interrupted();
  log(step(3, 'reading only footer + TOC of each layer with HTTP Range GETs'));
  const layers = await fetchTocs(client, ref, sample.layers, converted, log);

  // The node: the lazypull snapshotter (no background fetch, so the fetched share shows what the
  // container read) and containerd with it as a proxy plugin; a full pull does not involve it.
  interrupted();
  const snapshotterDir = join(workDir, 'lazypull');
  await mkdir(snapshotterDir);
  const snapshotter = await startLocalSnapshotter({ dir: snapshotterDir, plainHttpRegistries: [registry.host], backgroundFetch: false });
  // Added before containerd, so undone after it: no container holds a lazy layer when its server stops.
  teardown.add('lazypull snapshotter', async () => {
    await snapshotter.stop();
    // The layer servers outlive the daemon by design: make sure none is left, nor a FUSE mount.
    const left = await leftoverLayerServers(workDir);
    if (left.processes.length + left.mounts.length > 0) {
      await sweepLayerServers(workDir);
      throw new Error(`had to kill ${left.processes.length} layer servers and detach ${left.mounts.length} FUSE mounts`);
    }
  });
  interrupted();
  const containerd = await startContainerd({ parentDir: workDir, keepDir: opts.keep, proxySnapshotters: { [LAZY_SNAPSHOTTER]: snapshotter.socket } });
  teardown.add('containerd', () => containerd.stop());
  const lazy = lazyPullMode(snapshotter, workDir);
  // Containers of a namespace other than containerd's own: their cgroups, should a task be left.
  teardown.add(`cgroups of namespace ${containerd.namespace}-${lazy.name}`, async () => {
    await containerd.stop();
    sweepCgroups(`${containerd.namespace}-${lazy.name}`);
  });

  interrupted();
  log(step(4, `private containerd: ${FULL_PULL.title} of ${ref}, then ctr run`));
  const full = await runMode(containerd, ref, FULL_PULL, log);

  interrupted();
  log(step(5, `lazypull snapshotter on ${snapshotter.socket} (background fetch off): ${lazy.title}, then ctr run --snapshotter ${LAZY_SNAPSHOTTER}`));
  const lazyRun = await runMode(containerd, ref, lazy, log);
  const fetched = lazyRun.fetchedBytes ?? 0;
  const imageBytes = lazyRun.imageBytes ?? 0;
  const tocBytes = layers.reduce((sum, l) => sum + l.tocFetch.bytes, 0);
  log(
    `      fetched ${mib(fetched)} of the image's ${mib(imageBytes)} (${((lazyRun.fetchedShare ?? 0) * 100).toFixed(1)}%) of file contents, ` +
      `plus ${kib(tocBytes)} of footers and TOCs`,
  );
  const fullSeconds = full.pullSeconds + full.runSeconds;
  const lazySeconds = lazyRun.pullSeconds + lazyRun.runSeconds;
  const lazyVsFull = lazySeconds / fullSeconds;
  log(`      pull + run: lazy ${lazySeconds.toFixed(2)} s, full ${fullSeconds.toFixed(2)} s (lazy/full ${lazyVsFull.toFixed(2)})`);
  if (lazyVsFull >= 1) {
    log(`      (on loopback a ${mib(imageBytes)} download costs next to nothing; the lazy pull's fixed cost is one layer server per layer.`);
    log('       The gap opens with real images and networks: `npm run bench` measures a Debian + python3 image.)');
  }

  await cleanUp();
  const workDirRemoved = !existsSync(workDir);
  const stopped = 'stopped containerd, the lazypull snapshotter and its layer servers, and the registry';
  log(step(6, opts.keep ? `${stopped}; kept ${workDir}` : `${stopped}, removed ${workDir}`));
  return {
    workDir,
    kept: opts.keep,
    workDirRemoved,
    image: { reference: ref, manifestDigest: conversion.value.digest, cmd: SAMPLE_CMD, expectedOutput: GREETING },
    buildSeconds: built.seconds,
    convertSeconds: conversion.seconds,
    layers,
    runs: [full, lazyRun],
    lazyVsFull,
    totalSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
  };
}

/** One mode's pull and run, with progress lines; the container must print the greeting. */
async function runMode(containerd: Containerd, ref: string, mode: RunMode, log: DemoOptions['log']): Promise<RunResult> {
  const result = await pullAndRun(containerd, ref, mode, (seconds, facts) => {
    const how = facts ? ` (layers: ${facts.layers.map((l) => l.mode).join(', ')})` : '';
    log(`      pulled in ${seconds.toFixed(2)} s${how}; running it ...`);
  });
  log(`      ran in ${result.runSeconds.toFixed(2)} s; the container printed:`);
  log(`      ${result.output.trimEnd()}`);
  if (result.output !== GREETING) {
    throw new LazypullError('LAZYPULL_ERR_SANDBOX', `the container printed ${JSON.stringify(result.output)}, expected ${JSON.stringify(GREETING)}`, { mode: mode.name });
  }
  return result;
}
