/**
 * One request to a registry, with authentication layered around the
 * transport: send with whatever header the host asked for before, and on a
 * 401 answer the challenge and send again. A header that was refused is
 * retried at most once more (a refreshed token), so a wrong password costs
 * two round trips, not a loop.
 */

import { LazypullError } from '../errors';
import { basicHeader, RegistryAuth } from './auth';
import { debug } from './debug';
import { Credentials, DockerConfig, FoundCredentials } from './docker-config';
import { HttpRequest, HttpResponse, HttpTransport, headerValue } from './http';
import { Operation, statusError } from './registry-errors';

export interface SessionOptions {
  plainHttp: boolean | string[] | ((host: string) => boolean);
  dockerConfigPath?: string;
  credentials?: Credentials;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  maxConnectionsPerHost: number;
}

export class RegistrySession {
  readonly transport: HttpTransport;
  private readonly auth: RegistryAuth;
  private readonly dockerConfig: DockerConfig;

  constructor(private readonly options: SessionOptions) {
    this.transport = new HttpTransport(options);
    this.dockerConfig = new DockerConfig(options.dockerConfigPath);
    const explicit = options.credentials;
    const credentials = async (host: string): Promise<FoundCredentials | undefined> =>
      explicit !== undefined ? { ...explicit, source: 'explicitly given credentials' } : this.dockerConfig.lookup(host);
    this.auth = new RegistryAuth(credentials, (op, url, creds) => {
      const headers: Record<string, string> = { accept: 'application/json' };
      if (creds !== undefined) {
        headers.authorization = basicHeader(creds);
      }
      return this.transport.send({ method: 'GET', url, headers, maxBodyBytes: 1 << 20 }, op);
    });
  }

  /** "http" only for hosts configured as plain; loopback gets no exception. */
  url(host: string, path: string): URL {
    const plain = this.options.plainHttp;
    const isPlain = typeof plain === 'function' ? plain(host) : plain === true || (Array.isArray(plain) && plain.includes(host));
    const scheme = isPlain ? 'http' : 'https';
    return new URL(`${scheme}://${host}${path}`);
  }

  /** Sends `req` for `op`, answering auth challenges with credentials good for `scopes`. */
  async exchange(op: Operation, scopes: string[], req: HttpRequest): Promise<HttpResponse> {
    const host = op.target.registry;
    let header = await this.auth.headerFor(op, host, scopes);
    let refused = 0;
    for (;;) {
      const headers = { ...(req.headers ?? {}) };
      if (header !== undefined) headers.authorization = header;
      const res = await this.transport.send({ ...req, headers }, op);
      debug(`${req.method} ${res.url.host}${res.url.pathname} -> ${res.status}`);
      if (res.status !== 401) return res;
      if (header !== undefined) refused++;
      if (refused > 1) return res;
      const next = await this.auth.answer(op, host, res.headers['www-authenticate'], scopes, header);
      if (next === undefined) return res;
      header = next;
    }
  }

  /** The error for an unexpected response, with a credentials hint for 401/403. */
  fail(op: Operation, res: HttpResponse, hint?: string): LazypullError {
    const authHint = res.status === 401 || res.status === 403 ? this.auth.hint(op.target.registry) : undefined;
    const hints = [authHint, hint].filter((h): h is string => h !== undefined);
    return statusError(op, res.status, res.body, hints.length > 0 ? hints.join('; ') : undefined);
  }

  /** Resolves a Location header against the URL it came with (registries send both forms). */
  location(op: Operation, res: HttpResponse): URL {
    const location = headerValue(res.headers, 'location');
    if (location === undefined || location.length === 0) {
      throw statusError(op, res.status, res.body, 'response has no Location header');
    }
    return new URL(location, res.url);
  }

  async close(): Promise<void> {
    await this.transport.close();
  }
}
