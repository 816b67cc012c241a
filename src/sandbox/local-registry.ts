/**
 * A real registry (Debian's docker-registry, distribution 2.8) on a free
 * loopback port, with its config and storage in a private temp dir. Used by
 * the demo, the benchmarks and the tests. Optional htpasswd auth; any other
 * auth (the tests' token service) plugs in as extra `auth:` YAML lines.
 *
 * `stop()` kills the registry and removes its dir; if this process exits
 * first, an exit hook does the same.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LazypullError } from '../errors';
import { cleanupOnExit } from './exit-cleanup';
import { freePort } from './free-port';
import { findBinary, requireBinary } from './prerequisites';

export const REGISTRY_BINARY = 'docker-registry';
const REGISTRY_PACKAGE = 'docker-registry';

export interface LocalRegistryOptions {
  /** Where the private dir is created; default the system temp dir. */
  parentDir?: string;
  /** Basic auth against a bcrypt htpasswd file (needs `htpasswd` from apache2-utils). */
  htpasswd?: { username: string; password: string };
  /**
   * Extra top-level YAML lines, typically an `auth:` block. Gets the private
   * dir first, so files the lines name (a token certificate) can live in it.
   */
  authConfig?: (dir: string) => string[] | Promise<string[]>;
  /** Leave the private dir (storage, config) in place on stop(). */
  keepDir?: boolean;
  /** How long to wait for `/v2/` to answer; default 15000. */
  startTimeoutMs?: number;
}

export interface LocalRegistry {
  /** "127.0.0.1:PORT" */
  host: string;
  port: number;
  /** Private dir: config, storage, auth files. */
  dir: string;
  /** The registry's recent output, for diagnosing a failure. */
  logs(): string;
  /** Kill the registry and remove its dir (unless keepDir); safe to call twice. */
  stop(): Promise<void>;
}

export function registryAvailable(): boolean {
  return findBinary(REGISTRY_BINARY) !== undefined;
}

/** A JSON string is a valid YAML scalar, and quotes whatever a path holds. */
export function yamlString(value: string): string {
  return JSON.stringify(value);
}

/** The HTTP status of GET /v2/ (200 open, 401 with auth), or undefined while nothing answers. */
function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v2/', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

function htpasswdLines(dir: string, user: { username: string; password: string }): string[] {
  const file = join(dir, 'htpasswd');
  const tool = requireBinary('htpasswd', 'apache2-utils');
  // -i reads the password from stdin: it never shows up in a process listing.
  execFileSync(tool, ['-B', '-i', '-c', file, user.username], { input: user.password, stdio: ['pipe', 'ignore', 'ignore'] });
  return ['auth:', '  htpasswd:', `    realm: ${yamlString('lazypull')}`, `    path: ${yamlString(file)}`];
}

function renderConfig(dir: string, host: string, authLines: string[]): string {
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog: {disabled: true}',
    'storage:',
    `  filesystem: {rootdirectory: ${yamlString(join(dir, 'storage'))}}`,
    '  delete: {enabled: true}',
    '  maintenance: {uploadpurging: {enabled: false}}',
    'http:',
    `  addr: ${yamlString(host)}`,
    `  secret: ${yamlString(randomUUID())}`,
    ...authLines,
    '',
  ].join('\n');
}

/** One attempt on one port: the running registry, or why it did not come up. */
async function launch(dir: string, port: number, authLines: string[], opts: LocalRegistryOptions): Promise<LocalRegistry | { failure: string }> {
  const host = `127.0.0.1:${port}`;
  const config = join(dir, 'config.yml');
  writeFileSync(config, renderConfig(dir, host, authLines));
  // Own process group: a Ctrl-C on the terminal reaches us, and we stop the registry in order.
  const child = spawn(REGISTRY_BINARY, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  const keep = (data: Buffer): void => {
    log = (log + data.toString('utf8')).slice(-16384);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (error) => {
      keep(Buffer.from(String(error)));
      exited = true;
      resolve();
    });
  });
  const unregister = cleanupOnExit(() => {
    if (!exited) child.kill('SIGKILL');
    if (opts.keepDir !== true) rmSync(dir, { recursive: true, force: true });
  });

  const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000);
  let status: number | undefined;
  while (!exited && Date.now() < deadline) {
    status = await probe(port);
    if (status === 200 || status === 401) break;
    await sleep(50);
  }
  if (status !== 200 && status !== 401) {
    if (!exited) child.kill('SIGKILL');
    await exitedPromise;
    unregister();
    return { failure: log.trim().slice(-2000) || (exited ? 'it exited without output' : 'no answer on /v2/') };
  }

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exitedPromise;
      clearTimeout(killer);
    }
    if (opts.keepDir !== true) rmSync(dir, { recursive: true, force: true });
    unregister();
  };
  return { host, port, dir, logs: () => log, stop: () => (stopping ??= stop()) };
}

export async function startLocalRegistry(opts: LocalRegistryOptions = {}): Promise<LocalRegistry> {
  requireBinary(REGISTRY_BINARY, REGISTRY_PACKAGE);
  const dir = mkdtempSync(join(opts.parentDir ?? tmpdir(), 'lazypull-registry-'));
  try {
    const authLines = opts.htpasswd !== undefined ? htpasswdLines(dir, opts.htpasswd) : [];
    if (opts.authConfig !== undefined) authLines.push(...(await opts.authConfig(dir)));
    let failure = '';
    // The free port may be taken between probing and binding: try a few.
    for (let attempt = 0; attempt < 3; attempt++) {
      const result = await launch(dir, await freePort(), authLines, opts);
      if (!('failure' in result)) return result;
      failure = result.failure;
      if (!/address already in use/.test(failure)) break;
    }
    throw new LazypullError('LAZYPULL_ERR_SANDBOX', `docker-registry did not come up on loopback: ${failure}`, { binary: REGISTRY_BINARY });
  } catch (err) {
    if (opts.keepDir !== true) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
