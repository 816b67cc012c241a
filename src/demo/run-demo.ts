/**
 * `lazypull demo`, the product's story on one machine with loopback only:
 * build a sample image, convert it to eStargz into a private registry, show
 * that each layer's file tree is known after fetching only its TOC by HTTP
 * Range GETs, then pull and run it with a private containerd. Everything
 * lives in one temp dir and is torn down at the end, on failure and on
 * Ctrl-C: the caller runs the Teardown on a signal, which stops the daemons
 * so the running step fails fast, and runDemo removes the dir once unwound.
 */
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
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
import { startContainerd } from '../sandbox/local-containerd';
import { REGISTRY_BINARY, startLocalRegistry } from '../sandbox/local-registry';
import { requireBinary, requireRoot } from '../sandbox/prerequisites';
import { RUN_MODES, pullAndRun, type RunResult } from './run-modes';
import { buildSampleImage, GREETING, SAMPLE_CMD, type SampleLayer } from './sample-image';
import type { Teardown } from './teardown';
import { timed } from './timed';

const STEPS = 5;
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
  runs: RunResult[];
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
    if (cleanUpError === undefined) throw err;
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

  interrupted();
  const containerd = await startContainerd({ parentDir: workDir, keepDir: opts.keep });
  teardown.add('containerd', () => containerd.stop());
  const runs: RunResult[] = [];
  for (const mode of RUN_MODES) {
    interrupted();
    log(step(4, `private containerd: ${mode.title} of ${ref}, then ctr run`));
    const result = await pullAndRun(containerd, ref, mode);
    log(`      pulled in ${result.pullSeconds.toFixed(2)} s, ran in ${result.runSeconds.toFixed(2)} s; the container printed:`);
    log(`      ${result.output.trimEnd()}`);
    if (result.output !== GREETING) {
      throw new LazypullError('LAZYPULL_ERR_SANDBOX', `the container printed ${JSON.stringify(result.output)}, expected ${JSON.stringify(GREETING)}`, { mode: mode.name });
    }
    runs.push(result);
  }

  await cleanUp();
  const workDirRemoved = !existsSync(workDir);
  log(step(5, opts.keep ? `stopped containerd and the registry; kept ${workDir}` : `stopped containerd and the registry, removed ${workDir}`));
  return {
    workDir,
    kept: opts.keep,
    workDirRemoved,
    image: { reference: ref, manifestDigest: conversion.value.digest, cmd: SAMPLE_CMD, expectedOutput: GREETING },
    buildSeconds: built.seconds,
    convertSeconds: conversion.seconds,
    layers,
    runs,
    totalSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
  };
}
