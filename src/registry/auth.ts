/**
 * Registry authentication: anonymous first, then whatever the 401 asks for.
 * `Basic` sends the configured credentials; `Bearer` trades them (or
 * nothing) for a token at the realm, cached per (host, scope set) until
 * shortly before `expires_in`. What a host asked for is remembered, so later
 * requests authenticate up front instead of paying a 401 round trip each.
 *
 * Secrets live only in headers handed to the transport; messages name the
 * host, the realm (without query) and where credentials came from.
 */

import { debug } from './debug';
import { Credentials, FoundCredentials } from './docker-config';
import { HttpResponse } from './http';
import { operationError, Operation, statusText } from './registry-errors';
import { Challenge, parseWwwAuthenticate } from './www-authenticate';

export type CredentialSource = (host: string) => Promise<FoundCredentials | undefined>;
/** GET `url` (with Basic `credentials` when given); provided by the client so it shares retries and timeouts. */
export type TokenFetcher = (op: Operation, url: URL, credentials: Credentials | undefined) => Promise<HttpResponse>;

interface CachedToken {
  token: string;
  /** ms since epoch after which the token is not used any more */
  expiresAt: number;
}

const DEFAULT_TOKEN_LIFETIME_S = 60;

export function repositoryScope(repository: string, actions: string[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

/** Union of scopes, merging actions per resource: "repository:a:pull" + "repository:a:push" -> "repository:a:pull,push". */
export function mergeScopes(scopes: Iterable<string>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of scopes) {
    for (const part of scope.split(' ')) {
      if (part.length === 0) continue;
      const lastColon = part.lastIndexOf(':');
      if (lastColon <= 0) continue;
      const resource = part.slice(0, lastColon);
      const actions = byResource.get(resource) ?? new Set<string>();
      for (const action of part.slice(lastColon + 1).split(',')) if (action.length > 0) actions.add(action);
      byResource.set(resource, actions);
    }
  }
  return [...byResource.entries()]
    .map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`)
    .sort();
}

/** Whether a token for `have` (merged scopes) grants everything in `want` (merged scopes). */
export function covers(have: string[], want: string[]): boolean {
  const granted = new Map<string, Set<string>>();
  for (const scope of have) {
    const i = scope.lastIndexOf(':');
    granted.set(scope.slice(0, i), new Set(scope.slice(i + 1).split(',')));
  }
  return want.every((scope) => {
    const i = scope.lastIndexOf(':');
    const actions = granted.get(scope.slice(0, i));
    return actions !== undefined && scope.slice(i + 1).split(',').every((a) => actions.has(a));
  });
}

export function basicHeader(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64')}`;
}

function realmForMessages(realm: URL): string {
  return `${realm.protocol}//${realm.host}${realm.pathname}`;
}

export class RegistryAuth {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  /** host -> where its credentials came from ('' = none found), for error hints. */
  private readonly credentialOrigin = new Map<string, string>();

  constructor(
    private readonly credentials: CredentialSource,
    private readonly fetchToken: TokenFetcher,
  ) {}

  /** The header to send before any challenge, from what `host` asked for last time. */
  async headerFor(op: Operation, host: string, scopes: string[]): Promise<string | undefined> {
    const challenge = this.challenges.get(host);
    if (challenge === undefined) return undefined;
    if (challenge.scheme === 'basic') {
      const creds = await this.lookup(host);
      return creds === undefined ? undefined : basicHeader(creds);
    }
    const token = await this.token(op, host, challenge, scopes, undefined);
    return `Bearer ${token.token}`;
  }

  /**
   * After a 401: the header to retry with, or undefined when a retry cannot
   * succeed (no usable challenge, no credentials, or the same Basic
   * credentials were just rejected). A rejected token is refreshed.
   */
  async answer(
    op: Operation,
    host: string,
    wwwAuthenticate: string | string[] | undefined,
    scopes: string[],
    rejectedHeader: string | undefined,
  ): Promise<string | undefined> {
    const challenges = parseWwwAuthenticate(wwwAuthenticate);
    const challenge = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
    if (challenge === undefined) {
      debug(`${host}: 401 without a Basic or Bearer challenge`);
      return undefined;
    }
    this.challenges.set(host, challenge);
    if (challenge.scheme === 'basic') {
      const creds = await this.lookup(host);
      if (creds === undefined) return undefined;
      const header = basicHeader(creds);
      return header === rejectedHeader ? undefined : header;
    }
    const rejectedToken = rejectedHeader?.startsWith('Bearer ') ? rejectedHeader.slice('Bearer '.length) : undefined;
    const token = await this.token(op, host, challenge, scopes, rejectedToken);
    return `Bearer ${token.token}`;
  }

  /** One line for a final 401/403: which credentials were tried, so the user knows what to fix. */
  hint(host: string): string {
    const origin = this.credentialOrigin.get(host);
    if (origin === undefined) return 'anonymous access was refused';
    if (origin === '') return `no credentials for ${host} were found`;
    return `credentials for ${host} from ${origin} were rejected or lack permission`;
  }

  private async lookup(host: string): Promise<FoundCredentials | undefined> {
    const creds = await this.credentials(host);
    this.credentialOrigin.set(host, creds?.source ?? '');
    return creds;
  }

  private async token(
    op: Operation,
    host: string,
    challenge: Challenge,
    scopes: string[],
    rejectedToken: string | undefined,
  ): Promise<CachedToken> {
    const wanted = mergeScopes(scopes);
    const key = `${host} ${wanted.join(' ')}`;
    const cached = this.tokens.get(key);
    if (cached !== undefined) {
      // A token someone else refreshed meanwhile is newer than the rejected one: use it.
      if (cached.token !== rejectedToken && cached.expiresAt > Date.now()) return cached;
      this.tokens.delete(key);
    }
    if (rejectedToken === undefined) {
      // A push token also serves pulls of the same repository: no extra round trip to the token service.
      for (const [otherKey, other] of this.tokens) {
        if (other.expiresAt > Date.now() && otherKey.startsWith(`${host} `) && covers(otherKey.slice(host.length + 1).split(' '), wanted)) {
          return other;
        }
      }
    }
    let inflight = this.pending.get(key);
    if (inflight === undefined) {
      inflight = this.requestToken(op, host, challenge, scopes).finally(() => this.pending.delete(key));
      this.pending.set(key, inflight);
    }
    const token = await inflight;
    this.tokens.set(key, token);
    return token;
  }

  private async requestToken(op: Operation, host: string, challenge: Challenge, scopes: string[]): Promise<CachedToken> {
    const realmText = challenge.params.realm;
    let realm: URL;
    try {
      realm = new URL(realmText ?? '');
    } catch {
      throw operationError(op, 'LAZYPULL_ERR_REGISTRY_AUTH', `${host} sent a Bearer challenge without a usable realm`);
    }
    if (challenge.params.service !== undefined) realm.searchParams.set('service', challenge.params.service);
    const wanted = mergeScopes([...scopes, ...(challenge.params.scope !== undefined ? [challenge.params.scope] : [])]);
    for (const scope of wanted) realm.searchParams.append('scope', scope);

    const creds = await this.lookup(host);
    debug(`token request to ${realmForMessages(realm)} for ${wanted.join(' ')} (${creds ? 'with' : 'without'} credentials)`);
    const started = Date.now();
    const res = await this.fetchToken(op, realm, creds);
    const where = `token service ${realmForMessages(realm)}`;
    if (res.status !== 200) {
      const why =
        res.status === 401 || res.status === 403
          ? creds === undefined
            ? `${where} refused anonymous access (${statusText(res.status)}); no credentials for ${host} were found`
            : `${where} rejected credentials from ${creds.source} (${statusText(res.status)})`
          : `${where} answered ${statusText(res.status)}`;
      const code = res.status === 401 || res.status === 403 ? 'LAZYPULL_ERR_REGISTRY_AUTH' : 'LAZYPULL_ERR_REGISTRY_STATUS';
      throw operationError(op, code, why, { status: res.status });
    }
    let token: unknown;
    let expiresIn: unknown;
    let issuedAt: unknown;
    try {
      const parsed = JSON.parse(res.body.toString('utf8')) as Record<string, unknown>;
      token = parsed.token ?? parsed.access_token;
      expiresIn = parsed.expires_in;
      issuedAt = parsed.issued_at;
    } catch {
      throw operationError(op, 'LAZYPULL_ERR_REGISTRY_AUTH', `${where} did not answer with JSON`);
    }
    if (typeof token !== 'string' || token.length === 0) {
      throw operationError(op, 'LAZYPULL_ERR_REGISTRY_AUTH', `${where} answered without a token`);
    }
    const lifetimeS = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : DEFAULT_TOKEN_LIFETIME_S;
    const issued = typeof issuedAt === 'string' && !Number.isNaN(Date.parse(issuedAt)) ? Math.min(Date.parse(issuedAt), started) : started;
    // Stop using it a little early so a token does not expire in flight.
    const margin = Math.min(10000, lifetimeS * 100);
    return { token, expiresAt: issued + lifetimeS * 1000 - margin };
  }
}
