/**
 * The request layer under the registry client: one undici Agent (a
 * connection pool per origin, reused across calls), a deadline per
 * request, retries with exponential backoff for idempotent reads, and
 * redirect following for GET/HEAD. It knows nothing about registries or
 * auth except that an Authorization header must not follow a redirect to
 * another origin (blob storage gets a signed URL, not our token).
 */

import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { debug } from './debug';
import { networkError, Operation } from './registry-errors';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface HttpRequest {
  method: HttpMethod;
  url: URL;
  headers?: Record<string, string>;
  /** A factory, so that a request repeated (retry, auth challenge) gets a fresh body. */
  body?: () => Buffer | Readable;
  /** 'stream' hands a 2xx body back unread; error bodies are always buffered. */
  response?: 'buffer' | 'stream';
  /** Cap for buffered bodies; larger ones fail the request. Default 16 MiB. */
  maxBodyBytes?: number;
}

export type ResponseHeaders = Record<string, string | string[] | undefined>;

export interface HttpResponse {
  status: number;
  headers: ResponseHeaders;
  /** Final URL after redirects. */
  url: URL;
  /** Buffered body (empty for streamed 2xx responses and HEAD). */
  body: Buffer;
  /** Set for 'stream' requests with a 2xx status; the caller must consume or destroy it. */
  stream?: Readable;
}

export interface HttpTransportOptions {
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  maxConnectionsPerHost: number;
}

const DEFAULT_MAX_BODY = 16 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const MAX_BACKOFF_MS = 10000;

export function headerValue(headers: ResponseHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Drops a response body we no longer want. undici reports an unfinished
 * body destroyed without a reason as an AbortError event, which would be
 * uncaught; it is expected here, so it is swallowed.
 */
export function discard(stream: Readable | undefined): void {
  if (stream === undefined) return;
  stream.on('error', () => undefined);
  if (!stream.destroyed) stream.destroy();
}

function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

/** A local fault (bad body length, aborted by us) is not worth retrying; transport faults are. */
function isRetryableError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code !== 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH' && code !== 'UND_ERR_INVALID_ARG' && code !== 'LAZYPULL_BODY_TOO_LARGE';
}

class TimeoutError extends Error {
  readonly code = 'LAZYPULL_TIMEOUT';
  constructor(ms: number) {
    super(`request timed out after ${ms} ms`);
  }
}

async function readCapped(body: Readable, cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    total += buf.length;
    if (total > cap) {
      discard(body);
      throw Object.assign(new Error(`response body larger than ${cap} bytes`), { code: 'LAZYPULL_BODY_TOO_LARGE' });
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, total);
}

function retryAfterMs(headers: ResponseHeaders): number | undefined {
  const value = headerValue(headers, 'retry-after');
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

export class HttpTransport {
  private readonly agent: Agent;

  constructor(private readonly options: HttpTransportOptions) {
    this.agent = new Agent({
      connections: options.maxConnectionsPerHost,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      connect: { timeout: Math.min(options.timeoutMs, 30000) },
    });
  }

  /**
   * Sends `req`, retrying GET/HEAD on transport errors, 5xx and 429. A final
   * retryable status is returned (the caller turns it into an error that
   * names the operation); a final transport error throws REGISTRY_NETWORK.
   */
  async send(req: HttpRequest, op: Operation): Promise<HttpResponse> {
    const idempotent = req.method === 'GET' || req.method === 'HEAD';
    const maxAttempts = idempotent ? this.options.retries + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      let delay: number;
      try {
        const res = await this.followRedirects(req, idempotent);
        if (!isRetryableStatus(res.status) || attempt >= maxAttempts) return res;
        delay = retryAfterMs(res.headers) ?? this.backoff(attempt);
        debug(`${req.method} ${req.url.pathname}: ${res.status}, retry ${attempt}/${this.options.retries} in ${delay} ms`);
      } catch (error) {
        if (attempt >= maxAttempts || !isRetryableError(error)) throw networkError(op, error, attempt, req.url);
        delay = this.backoff(attempt);
        debug(`${req.method} ${req.url.pathname}: ${(error as Error).message}, retry ${attempt}/${this.options.retries} in ${delay} ms`);
      }
      await sleep(Math.min(delay, MAX_BACKOFF_MS));
    }
  }

  private backoff(attempt: number): number {
    const base = this.options.retryDelayMs * 2 ** (attempt - 1);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private async followRedirects(req: HttpRequest, idempotent: boolean): Promise<HttpResponse> {
    let url = req.url;
    let headers = { ...(req.headers ?? {}) };
    for (let hop = 0; ; hop++) {
      const res = await this.once(req, url, headers);
      const location = headerValue(res.headers, 'location');
      const redirect = [301, 302, 303, 307, 308].includes(res.status) && location !== undefined;
      if (!redirect || !idempotent || hop >= MAX_REDIRECTS) return res;
      discard(res.stream);
      const next = new URL(location, url);
      if (next.origin !== url.origin) {
        // Never send registry credentials to blob storage.
        headers = Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== 'authorization'));
      }
      debug(`${req.method} ${url.pathname}: ${res.status} redirect to ${next.origin}${next.pathname}`);
      url = next;
    }
  }

  private async once(req: HttpRequest, url: URL, headers: Record<string, string>): Promise<HttpResponse> {
    const body = req.body?.();
    const streamedUpload = body instanceof Readable;
    const controller = new AbortController();
    // A streamed upload is bounded by undici's idle timeouts instead, so a big layer is not cut off.
    const timer = streamedUpload
      ? undefined
      : setTimeout(() => controller.abort(new TimeoutError(this.options.timeoutMs)), this.options.timeoutMs);
    try {
      const res = await this.agent.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: req.method,
        headers,
        body: body ?? null,
        signal: controller.signal,
      });
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      if (req.response === 'stream' && ok && req.method !== 'HEAD') {
        // From here the body is bounded by the agent's idle body timeout, not the deadline.
        if (timer !== undefined) clearTimeout(timer);
        return { status: res.statusCode, headers: res.headers, url, body: Buffer.alloc(0), stream: res.body };
      }
      const cap = ok ? (req.maxBodyBytes ?? DEFAULT_MAX_BODY) : 65536;
      let buffered: Buffer;
      if (!ok && res.statusCode >= 300 && res.statusCode < 400) {
        await res.body.dump();
        buffered = Buffer.alloc(0);
      } else if (!ok) {
        // Error bodies only feed a one-line summary: keep the head, drop the rest.
        buffered = await readCapped(res.body, cap).catch(() => Buffer.alloc(0));
      } else {
        buffered = await readCapped(res.body, cap);
      }
      return { status: res.statusCode, headers: res.headers, url, body: buffered };
    } catch (error) {
      if (body instanceof Readable && !body.destroyed) body.destroy();
      throw controller.signal.aborted && controller.signal.reason instanceof TimeoutError ? controller.signal.reason : error;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}
