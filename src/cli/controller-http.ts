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

/** The status and text of the answer to `method path` on `server` (a URL without a trailing slash). */
export function callController(server: string, method: string, path: string, body?: string, contentType = 'application/yaml'): Promise<{ status: number; text: string }> {
  let url: URL;
  try {
    url = new URL(`${server}${path}`);
  } catch {
    return Promise.reject(new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} is not a URL (--server or LAZYPULL_SERVER)`, { server }));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.reject(new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} is not http:// or https://`, { server }));
  }
  // The controller's API has no authentication to send them to; errors must not show them either (redact()).
  if (url.username !== '' || url.password !== '') {
    return Promise.reject(new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `the controller's address ${server} must not carry credentials`, { server }));
  }
  const tls = url.protocol === 'https:';
  // Only the one the URL needs: node:https loads TLS.
  const request = (tls ? require('node:https') : require('node:http')).request as (url: URL, options: RequestOptions) => ClientRequest;
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
