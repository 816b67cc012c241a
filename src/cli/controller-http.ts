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

/** The status and text of the answer to `method path` on `server` (a URL without a trailing slash). */
export function callController(server: string, method: string, path: string, body?: string, contentType = 'application/yaml'): Promise<{ status: number; text: string }> {
  let target: ReturnType<typeof controllerRequest>;
  try {
    target = controllerRequest(server, path);
  } catch (err) {
    return Promise.reject(err);
  }
  const { url, tls, request } = target;
  const payload = body === undefined ? undefined : Buffer.from(body, 'utf8');
  return new Promise((resolve, reject) => {
    let settled = false;
    let answered = false;
    const finish = (err: Error | undefined, result?: { status: number; text: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      req.destroy();
      if (err) reject(err);
      else resolve(result!);
    };
    const brokenOff = (): LazypullError => new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller at ${server} broke off its answer to ${method} ${path}`, { server });
    const headers = payload === undefined ? {} : { 'content-type': contentType, 'content-length': payload.length };
    const req = request(url, { method, agent: false, headers });
    const connectTimer = setTimeout(() => finish(unreachableError(server, 'ETIMEDOUT')), CONNECT_TIMEOUT_MS);
    req.on('socket', (socket) => socket.once(tls ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer)));
    req.setTimeout(IDLE_TIMEOUT_MS, () => finish(answered ? brokenOff() : unreachableError(server, 'ETIMEDOUT')));
    req.on('error', (err: NodeJS.ErrnoException) => finish(answered ? brokenOff() : unreachableError(server, err.code ?? err.message)));
    req.on('response', (res: IncomingMessage) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      // UTF-8, a leading BOM dropped, bad bytes replaced.
      res.on('end', () => finish(undefined, { status: res.statusCode ?? 0, text: new TextDecoder().decode(Buffer.concat(chunks)) }));
      res.on('error', () => finish(brokenOff()));
      res.on('close', () => finish(brokenOff()));
    });
    req.end(payload);
  });
}

/** A watch on the controller: its end, and a way to end it sooner. */
export interface ControllerWatch {
  /**
   * Settles when the answer ends. `streamed`: the controller sent a watch
   * stream, each line of which went to `onLine` (it ended: the object was
   * deleted, or the connection closed). Otherwise the answer was not a stream
   * (an error, or a controller without watches): its status and text.
   */
  done: Promise<{ streamed: true } | { streamed: false; status: number; text: string }>;
  close(): void;
}

/**
 * `GET path` as a watch (`?watch=1` added): the controller streams one JSON
 * event a line (application/x-ndjson), each handed to `onLine` as it comes.
 * No idle timeout: a set can stay unchanged for hours.
 */
export function watchController(server: string, path: string, onLine: (line: string) => void): ControllerWatch {
  let target: ReturnType<typeof controllerRequest>;
  try {
    target = controllerRequest(server, `${path}${path.includes('?') ? '&' : '?'}watch=1`);
  } catch (err) {
    return { done: Promise.reject(err), close: () => undefined };
  }
  const { url, tls, request } = target;
  let close: () => void = () => undefined;
  const done = new Promise<Awaited<ControllerWatch['done']>>((resolve, reject) => {
    let settled = false;
    let answered = false;
    const finish = (err: Error | undefined, result?: Awaited<ControllerWatch['done']>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      req.destroy();
      if (err) reject(err);
      else resolve(result!);
    };
    const req = request(url, { method: 'GET', agent: false });
    close = () => finish(undefined, { streamed: true });
    const connectTimer = setTimeout(() => finish(unreachableError(server, 'ETIMEDOUT')), CONNECT_TIMEOUT_MS);
    req.on('socket', (socket) => socket.once(tls ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer)));
    req.on('error', (err: NodeJS.ErrnoException) => finish(answered ? undefined : unreachableError(server, err.code ?? err.message), { streamed: true }));
    req.on('response', (res: IncomingMessage) => {
      answered = true;
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
      const end = (): void => finish(undefined, streamed ? { streamed: true } : { streamed: false, status: res.statusCode ?? 0, text: text + decoder.decode() });
      res.on('end', end);
      res.on('error', end);
      res.on('close', end);
    });
    req.end();
  });
  return { done, close: () => close() };
}
