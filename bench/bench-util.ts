/**
 * What the node benchmarks (cold start, rollout) share: a private work dir
 * whose daemons are stopped on the way out and on SIGINT/SIGTERM, medians,
 * settling the disk before a measurement, and getting images into the
 * loopback registry the way a user would: built images pushed as they are,
 * eStargz images made by the `lazypull convert` CLI with a --prioritize list.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requireFuse } from '../src/demo/layer-servers';
import { RegistryRepository } from '../src/image/registry-repository';
import { writeImage, type LayerBlob, type RunConfig } from '../src/image/write-image';
import { RegistryClient } from '../src/registry/client';
import { parseReference } from '../src/registry/reference';
import { requireBinary, requireRoot } from '../src/sandbox/prerequisites';
import { LAZYPULL_CLI } from './lazypull-convert';

const execFileP = promisify(execFile);

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Things to stop, last started first; also on SIGINT/SIGTERM. */
export class Stops {
  private readonly steps: Array<() => Promise<unknown>> = [];
  add(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }
  async run(): Promise<void> {
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) await step().catch(() => undefined);
  }
}

/**
 * Run `body` in a fresh temp dir. Whatever it registers in `stops` is
 * stopped when it ends, fails, or the process gets SIGINT/SIGTERM (then the
 * process exits); the dir goes too.
 */
export async function withWorkDir<T>(prefix: string, log: (line: string) => void, body: (work: string, stops: Stops) => Promise<T>): Promise<T> {
  const work = await mkdtemp(join(tmpdir(), prefix));
  const stops = new Stops();
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping everything the benchmark started`);
    void stops
      .run()
      .then(() => rm(work, { recursive: true, force: true }))
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await body(work, stops);
  } finally {
    await stops.run();
    await rm(work, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * Write back what earlier runs left dirty (a full pull writes the image twice: content and unpacked snapshot),
 * so it does not land on the next measurement.
 */
export async function settle(): Promise<void> {
  await execFileP('sync');
}

/** Why a benchmark that runs containers cannot run here (root, FUSE, `[binary, Debian package]`s), or undefined. */
export function nodeBenchmarkMissing(what: string, binaries: Array<[string, string]>): string | undefined {
  try {
    requireRoot(what);
    for (const [bin, pkg] of binaries) requireBinary(bin, pkg);
    requireFuse();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A client of the loopback registry: plain HTTP, and no docker config.json of the user's. */
export function benchRegistryClient(work: string): RegistryClient {
  return new RegistryClient({ plainHttp: true, dockerConfigPath: join(work, 'no-docker-config.json') });
}

/** Push an image built here (plain gzip layers) to `ref`. */
export async function pushImage(work: string, ref: string, layers: LayerBlob[], run: RunConfig): Promise<void> {
  const client = benchRegistryClient(work);
  try {
    await writeImage(new RegistryRepository(client, parseReference(ref)), layers, run);
  } finally {
    await client.close();
  }
}

export interface ConvertedImage {
  /** The eStargz layers pushed, in order. */
  layers: Array<{ digest: string; size: number }>;
  /** The `lazypull convert` process, Node start-up included. */
  seconds: number;
}

/** `lazypull convert SOURCE TARGET --plain-http --prioritize LIST --json`, with `prioritized` as the list. */
export async function convertWithCli(work: string, source: string, target: string, prioritized: string[]): Promise<ConvertedImage> {
  const listPath = join(work, `prioritize-${process.hrtime.bigint()}.txt`);
  await writeFile(listPath, `${prioritized.join('\n')}\n`);
  const started = process.hrtime.bigint();
  const { stdout } = await execFileP(process.execPath, [LAZYPULL_CLI, 'convert', source, target, '--plain-http', '--prioritize', listPath, '--json'], {
    maxBuffer: 16 << 20,
    timeout: 20 * 60_000,
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const converted = JSON.parse(stdout) as { manifests?: Array<{ layers: Array<{ digest: string; size: number }> }> };
  return { layers: converted.manifests?.[0]?.layers ?? [], seconds };
}
