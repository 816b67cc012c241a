/**
 * One request to the controller's HTTP API with Node's own client, for every
 * `lazypull rollout` command: the full CLI (rollout-command.ts) and the thin
 * `rollout apply` client the CLI's entry runs first (thin-apply-client.ts)
 * share it, so both send the same request and report the same failures.
 * Not `fetch`: a process that used it cannot exit before V8 has compiled
 * undici's WebAssembly HTTP parser (~90 ms on this machine), and the thin
 * client must stay small. Imports only small modules.
 */
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { LazypullError } from '../errors';
import { unreachableError } from './controller-answer';

/** A controller that accepts the connection but does not answer in this long is reported unreachable. */
const CONNECT_TIMEOUT_MS = 10_000;
/** An answer with no bytes for this long is reported broken off. */
const IDLE_TIMEOUT_MS = 300_000;

/** `server` + `path` as a URL and the node:http(s) request function it needs; a bad --server is an error. */
function controllerRequest(server: string, path: string): { url: URL; tls: boolean; request: (url: URL, options: RequestOptions) => ClientRequest } {
  let url: URL;
  try {
    url = new URL(`${server}${path}`);
  } catch {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} is not a URL (--server or LAZYPULL_SERVER)`, { server });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} is not http:// or https://`, { server });
  }
  // The controller's API has no authentication to send them to; errors must not show them either (redact()).
  if (url.username !== '' || url.password !== '') {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} must not carry credentials`, { server });
  }
  const tls = url.protocol === 'https:';
  // Only the one the URL needs: node:https loads TLS.
  const request = (tls ? require('node:https') : require('node:http')).request as (url: URL, options: RequestOptions) => ClientRequest;
  return { url, tls, request };
}

type Settle<T> = (err: Error | undefined, result?: T) => void;

/**
 * One request to the controller, settled once (the request destroyed then):
 * by `answer`, given the answer and `settle`; by a failure before any answer,
 * as an unreachable controller (also when it has not connected within
 * CONNECT_TIMEOUT_MS, or sent nothing within `idleTimeoutMs`); or by
 * `brokenOff` when the connection fails once the answer has begun.
 */
function exchange<T>(
  server: string,
  method: string,
  path: string,
  opts: { payload?: Buffer; headers?: Record<string, string | number>; idleTimeoutMs?: number },
  handlers: { answer(res: IncomingMessage, settle: Settle<T>): void; brokenOff(settle: Settle<T>): void },
): { done: Promise<T>; settle: Settle<T> } {
  let settle: Settle<T> = () => undefined;
  const done = new Promise<T>((resolve, reject) => {
    const { url, tls, request } = controllerRequest(server, path);
    let settled = false;
    let answered = false;
    settle = (err, result) => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      req.destroy();
      if (err) reject(err);
      else resolve(result as T);
    };
    const failed = (reason: string): void => (answered ? handlers.brokenOff(settle) : settle(unreachableError(server, reason)));
    const req = request(url, { method, agent: false, headers: opts.headers ?? {} });
    const connectTimer = setTimeout(() => failed('ETIMEDOUT'), CONNECT_TIMEOUT_MS);
    req.on('socket', (socket) => socket.once(tls ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer)));
    if (opts.idleTimeoutMs !== undefined) req.setTimeout(opts.idleTimeoutMs, () => failed('ETIMEDOUT'));
    req.on('error', (err: NodeJS.ErrnoException) => failed(err.code ?? err.message));
    req.on('response', (res: IncomingMessage) => {
      answered = true;
      handlers.answer(res, settle);
    });
    req.end(opts.payload);
  });
  return { done, settle };
}

/** The status and text of the answer to `method path` on `server` (a URL without a trailing slash). */
export function callController(server: string, method: string, path: string, body?: string, contentType = 'application/yaml'): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : Buffer.from(body, 'utf8');
  const headers: Record<string, string | number> = payload === undefined ? {} : { 'content-type': contentType, 'content-length': payload.length };
  const brokenOff = (): LazypullError => new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller at ${server} broke off its answer to ${method} ${path}`, { server });
  return exchange<{ status: number; text: string }>(server, method, path, { payload, headers, idleTimeoutMs: IDLE_TIMEOUT_MS }, {
    answer(res, settle) {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      // UTF-8, a leading BOM dropped, bad bytes replaced.
      res.on('end', () => settle(undefined, { status: res.statusCode ?? 0, text: new TextDecoder().decode(Buffer.concat(chunks)) }));
      res.on('error', () => settle(brokenOff()));
      res.on('close', () => settle(brokenOff()));
    },
    brokenOff: (settle) => settle(brokenOff()),
  }).done;
}

/** A watch on the controller: its end, and a way to end it sooner. */
export interface ControllerWatch {
  /**
   * Settles when the answer ends. `streamed`: the controller sent a watch
   * stream, each line of which went to `onLine` (it ended: the object was
   * deleted, or the connection closed). Otherwise the answer was not a stream
   * (an error, or a controller without watches): its status and text.
   */
  done: Promise<WatchEnd>;
  close(): void;
}

type WatchEnd = { streamed: true } | { streamed: false; status: number; text: string };

/**
 * `GET path` as a watch (`?watch=1` added): the controller streams one JSON
 * event a line (application/x-ndjson), each handed to `onLine` as it comes.
 * No idle timeout: a set can stay unchanged for hours.
 */
export function watchController(server: string, path: string, onLine: (line: string) => void): ControllerWatch {
  const ended = (settle: Settle<WatchEnd>): void => settle(undefined, { streamed: true });
  const { done, settle } = exchange<WatchEnd>(server, 'GET', `${path}${path.includes('?') ? '&' : '?'}watch=1`, {}, {
    answer(res, settle) {
      const streamed = res.statusCode === 200 && (res.headers['content-type'] ?? '').startsWith('application/x-ndjson');
      const decoder = new TextDecoder();
      let text = '';
      res.on('data', (chunk: Buffer) => {
        text += decoder.decode(chunk, { stream: true });
        if (!streamed) return;
        for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
          const line = text.slice(0, nl);
          text = text.slice(nl + 1);
          if (line.trim() !== '') onLine(line);
        }
      });
      const end = (): void => (streamed ? ended(settle) : settle(undefined, { streamed: false, status: res.statusCode ?? 0, text: text + decoder.decode() }));
      res.on('end', end);
      res.on('error', end);
      res.on('close', end);
    },
    // A stream cut off ends like one the controller closed: the caller looks again.
    brokenOff: ended,
  });
  return { done, close: () => ended(settle) };
}
