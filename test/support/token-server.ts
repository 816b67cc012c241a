/**
 * The bearer-token service for registry auth tests: signs ES256 JWTs with a
 * throwaway key whose self-signed certificate is the registry's root bundle
 * and travels in the JWT's `x5c` header. Test-only: it hands out tokens to
 * whoever the test says.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, KeyObject, randomUUID, sign, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { yamlString } from '../../src/sandbox/local-registry';

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

export interface RunningTokenServer {
  info: TokenServer;
  /** The registry config's `auth:` block that trusts this service. */
  authLines: string[];
  close(): Promise<void>;
}

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

/** Start the service on loopback; key and certificate go into `dir` (the registry's private dir). */
export async function startTokenServer(dir: string, opts: TokenAuthOptions): Promise<RunningTokenServer> {
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

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  server.unref(); // never keeps the test process alive on its own
  const { port } = server.address() as AddressInfo;
  const info: TokenServer = {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    requests,
    expireNext: (count = 1) => {
      expireCount += count;
    },
  };
  let closing: Promise<void> | undefined;
  return {
    info,
    authLines: [
      'auth:',
      '  token:',
      `    realm: ${yamlString(info.realm)}`,
      `    service: ${yamlString(service)}`,
      `    issuer: ${yamlString(issuer)}`,
      `    rootcertbundle: ${yamlString(certFile)}`,
    ],
    close: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve()))),
  };
}
