/**
 * A real docker-registry (distribution 2.8) for tests: private temp dir for
 * storage and config, a free loopback port, optional htpasswd or bearer
 * token auth. For token auth this process runs the token service itself,
 * signing ES256 JWTs with a throwaway key whose self-signed certificate is
 * the registry's root bundle and travels in the JWT's `x5c` header.
 *
 * Every started registry is also killed (and its dir removed) when the
 * test process exits, so a failing test cannot leak one.
 */

import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { sign, X509Certificate, createPrivateKey, KeyObject, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, IncomingMessage, Server, ServerResponse, request as httpRequest } from 'node:http';
import { createServer as createNetServer, AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findBinary, requireBinary } from './require-env';

export interface TokenAuthOptions {
  /** Accepted at the token endpoint with Basic auth. Without them only anonymous tokens are issued. */
  username?: string;
  password?: string;
  /** Give anonymous callers pull access (like a public repository). Default false. */
  anonymousPull?: boolean;
  /** Decide which actions a caller gets; default: all requested for the user, pull for anonymous if allowed. */
  grant?: (account: string | undefined, type: string, name: string, requested: string[]) => string[];
  /** expires_in sent to clients (the JWT itself lives this long too). Default 300. */
  expiresIn?: number;
  /** Which JSON field carries the token. Default 'token'. */
  tokenField?: 'token' | 'access_token';
}

export interface TokenRequestRecord {
  account: string | undefined;
  scopes: string[];
  status: number;
  /** The JWT handed out, so tests can assert it never shows up in errors. */
  token?: string;
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** Every token request seen, in order. */
  readonly requests: TokenRequestRecord[];
  /** Sign the next `count` tokens already expired, so the registry refuses them. */
  expireNext(count?: number): void;
}

export interface RegistryFixture {
  /** "127.0.0.1:PORT" */
  host: string;
  /** Private temp dir (storage, config, auth files); removed by stop(). */
  dir: string;
  /** Present when started with `token`. */
  token?: TokenServer;
  /** The registry's recent stderr, for diagnosing a failure. */
  logs(): string;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  htpasswd?: { username: string; password: string };
  token?: TokenAuthOptions;
}

const REGISTRY_BINARY = 'docker-registry';
const live = new Set<{ child: ChildProcess; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const entry of live) {
      try {
        entry.child.kill('SIGKILL');
      } catch {
        // already gone
      }
      rmSync(entry.dir, { recursive: true, force: true });
    }
  });
}

export function registryAvailable(): boolean {
  return findBinary(REGISTRY_BINARY) !== undefined;
}

/**
 * For a mocha `before`: skip the suite when docker-registry (or, for auth
 * suites, htpasswd/openssl) is missing, except in CI (CI=true), where a
 * missing binary fails the suite.
 */
export function skipWithoutRegistry(ctx: Mocha.Context, auth: Array<'htpasswd' | 'token'> = []): void {
  requireBinary(ctx, REGISTRY_BINARY);
  if (auth.includes('htpasswd')) requireBinary(ctx, 'htpasswd');
  if (auth.includes('token')) requireBinary(ctx, 'openssl');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function probe(host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port: Number(host.split(':')[1]), path: '/v2/', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

function yamlString(value: string): string {
  return JSON.stringify(value); // a JSON string is a valid YAML scalar
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RegistryFixture> {
  if (!registryAvailable()) throw new Error(`${REGISTRY_BINARY} is not installed (Debian package docker-registry)`);
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'lazypull-registry-'));
  let tokenServer: { server: Server; info: TokenServer } | undefined;
  try {
    const authLines: string[] = [];
    if (opts.htpasswd !== undefined) {
      const file = join(dir, 'htpasswd');
      execFileSync('htpasswd', ['-B', '-b', '-c', file, opts.htpasswd.username, opts.htpasswd.password], { stdio: 'ignore' });
      authLines.push('auth:', '  htpasswd:', `    realm: ${yamlString('lazypull-test')}`, `    path: ${yamlString(file)}`);
    } else if (opts.token !== undefined) {
      tokenServer = await startTokenServer(dir, opts.token);
      authLines.push(
        'auth:',
        '  token:',
        `    realm: ${yamlString(tokenServer.info.realm)}`,
        `    service: ${yamlString(tokenServer.info.service)}`,
        `    issuer: ${yamlString(tokenServer.info.issuer)}`,
        `    rootcertbundle: ${yamlString(join(dir, 'token-cert.pem'))}`,
      );
    }

    let lastError: Error | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const host = `127.0.0.1:${port}`;
      const config = join(dir, 'config.yml');
      writeFileSync(
        config,
        [
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
        ].join('\n'),
      );
      const child = spawn(REGISTRY_BINARY, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
      const entry = { child, dir };
      live.add(entry);
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
          live.delete(entry);
          resolve();
        });
        child.once('error', (error) => {
          keep(Buffer.from(String(error)));
          exited = true;
          live.delete(entry);
          resolve();
        });
      });

      const deadline = Date.now() + 15000;
      let status: number | undefined;
      while (!exited && Date.now() < deadline) {
        status = await probe(host);
        if (status === 200 || status === 401) break;
        await sleep(50);
      }
      if (status === 200 || status === 401) {
        let stopped = false;
        const info = tokenServer;
        const fixture: RegistryFixture = {
          host,
          dir,
          logs: () => log,
          stop: async () => {
            if (stopped) return;
            stopped = true;
            if (!exited) {
              child.kill('SIGTERM');
              const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
              await exitedPromise;
              clearTimeout(killer);
            }
            if (info !== undefined) await new Promise<void>((resolve) => info.server.close(() => resolve()));
            rmSync(dir, { recursive: true, force: true });
          },
        };
        if (info !== undefined) fixture.token = info.info;
        return fixture;
      }
      if (!exited) {
        child.kill('SIGKILL');
        await exitedPromise;
      }
      lastError = new Error(`docker-registry did not come up on ${host}: ${log.trim().slice(-2000) || 'no output'}`);
      if (!/address already in use/.test(log)) break;
    }
    throw lastError ?? new Error('docker-registry did not start');
  } catch (error) {
    if (tokenServer !== undefined) tokenServer.server.close();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

// ---- token service --------------------------------------------------------

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function signJwt(key: KeyObject, certDer: Buffer, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
  const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  // JWS wants the raw r||s signature, not DER.
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${base64url(signature)}`;
}

function parseBasic(header: string | undefined): { username: string; password: string } | undefined {
  if (header === undefined || !header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

async function startTokenServer(dir: string, opts: TokenAuthOptions): Promise<{ server: Server; info: TokenServer }> {
  const keyFile = join(dir, 'token-key.pem');
  const certFile = join(dir, 'token-cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', '/CN=lazypull-test-token', '-keyout', keyFile, '-out', certFile],
    { stdio: 'ignore' },
  );
  const key = createPrivateKey(readFileSync(keyFile));
  const certDer = new X509Certificate(readFileSync(certFile)).raw;
  const service = 'lazypull-test-registry';
  const issuer = 'lazypull-test-issuer';
  const lifetime = opts.expiresIn ?? 300;
  let expireCount = 0;
  const requests: TokenRequestRecord[] = [];

  const defaultGrant = (account: string | undefined, _type: string, _name: string, requested: string[]): string[] => {
    if (account !== undefined) return requested;
    return opts.anonymousPull === true ? requested.filter((a) => a === 'pull') : [];
  };
  const grant = opts.grant ?? defaultGrant;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    const scopes = url.searchParams.getAll('scope');
    const reply = (status: number, body: unknown, account?: string, token?: string): void => {
      requests.push(token === undefined ? { account, scopes, status } : { account, scopes, status, token });
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname !== '/token') return reply(404, { error: 'not found' });
    if (url.searchParams.get('service') !== service) return reply(400, { error: 'wrong service' });
    let account: string | undefined;
    const basic = parseBasic(req.headers.authorization);
    if (basic !== undefined) {
      if (basic.username !== opts.username || basic.password !== opts.password || opts.username === undefined) {
        return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
      }
      account = basic.username;
    }
    const access = scopes
      .flatMap((scope) => scope.split(' '))
      .map((scope) => {
        const parts = scope.split(':');
        const actions = (parts.pop() ?? '').split(',').filter((a) => a.length > 0);
        const type = parts.shift() ?? '';
        const name = parts.join(':');
        return { type, name, actions: grant(account, type, name, actions) };
      });
    const now = Math.floor(Date.now() / 1000);
    // Distribution allows 60 s of clock leeway, so an "expired" token must be well past it.
    const expired = expireCount > 0;
    if (expired) expireCount--;
    const exp = expired ? now - 600 : now + lifetime;
    const claims = {
      iss: issuer,
      sub: account ?? '',
      aud: service,
      exp,
      nbf: expired ? now - 700 : now - 10,
      iat: expired ? now - 700 : now,
      jti: randomUUID(),
      access,
    };
    const token = signJwt(key, certDer, claims);
    const field = opts.tokenField ?? 'token';
    reply(200, { [field]: token, expires_in: lifetime, issued_at: new Date().toISOString() }, account, token);
  };

  const server = createHttpServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.unref(); // never keeps the test process alive on its own
  const { port } = server.address() as AddressInfo;
  return {
    server,
    info: {
      realm: `http://127.0.0.1:${port}/token`,
      service,
      issuer,
      requests,
      expireNext: (count = 1) => {
        expireCount += count;
      },
    },
  };
}
