/**
 * The controller's HTTP API (JSON over node:http), what `lazypull rollout`
 * and load balancers talk to:
 *
 *   PUT|POST /clonesets              body: CloneSet YAML (or JSON) → apply
 *   GET      /clonesets              → [{name, spec, status}]
 *   GET      /clonesets/NAME         → {spec, status}
 *   GET      /clonesets/NAME?watch=1, /clonesets/NAME/ready?watch=1, /ready?watch=1
 *            → a stream of changes (application/x-ndjson), one event a line as a Kubernetes
 *            watch sends them: {"type": "ADDED", "object": …} first (what the GET answers),
 *            {"type": "MODIFIED", …} each time it changes, {"type": "DELETED", "object":
 *            {"name"}} when the set is deleted, and the stream ends
 *   GET      /clonesets/NAME/ready   → [{name, ip, revision, ready}]
 *   POST     /clonesets/NAME/pause   /resume
 *   PATCH    /clonesets/NAME/pods/POD/labels
 *            body: {"labels": {KEY: VALUE | null}, "overwrite": false}
 *            → {cloneset, name, sandboxId, labels, result, notFound} (kubectl label)
 *   DELETE   /clonesets/NAME         → when the pods are gone
 *   GET      /ready                  → every set's pods [{cloneset, name, ip, revision, ready}]
 *   GET      /healthz
 *
 * Errors: {"error": {"code", "message", "field"?}} with 400 (bad spec or
 * label, the field named), 404 (unknown set, pod or path), 405, 409 (a label
 * already has another value and overwrite is off), 413, 500.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isLazypullError, LazypullError, toError } from '../errors';
import type { Logger } from '../util/json-log';
import type { Controller, ReadyEntry } from './controller';
import { parseLabelRequest } from './pod-labels';

/** Largest request body accepted. */
const MAX_BODY = 1 << 20;

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly extra: Record<string, unknown> = {}) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'BODY_TOO_LARGE', `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** `127.0.0.1:8450` → host and port; only loopback or explicit hosts, never a wildcard by accident. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `--listen expects HOST:PORT (e.g. 127.0.0.1:8450), got ${JSON.stringify(listen)}`, { listen });
  }
  return { host: m[1] ?? m[2], port };
}

export interface HttpApi {
  server: Server;
  /** `http://HOST:PORT` */
  url: string;
  close(): Promise<void>;
}

export async function startHttpApi(controller: Controller, listen: string, log: Logger = () => undefined): Promise<HttpApi> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    void handle(controller, req, res).catch((value: unknown) => {
      const err = toError(value);
      if (err instanceof HttpError) {
        send(res, err.status, { error: { code: err.code, message: err.message, ...err.extra } });
      } else if (isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT')) {
        send(res, 400, { error: { code: err.code, message: err.message, ...err.details } });
      } else {
        log({ level: 'error', event: 'http_error', method: req.method, path: req.url, error: err.message });
        send(res, 500, { error: { code: isLazypullError(err) ? err.code : 'INTERNAL', message: err.message } });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    server,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(controller: Controller, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const parts = url.pathname.split('/').filter((p) => p !== '').map(decodeURIComponent);
  const method = req.method ?? 'GET';
  const notAllowed = (): never => {
    throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} ${url.pathname} is not supported`);
  };
  const unknownSet = (name: string): never => {
    throw new HttpError(404, 'NOT_FOUND', `CloneSet ${JSON.stringify(name)} not found`, { cloneset: name });
  };

  if (parts.length === 1 && parts[0] === 'healthz') return send(res, 200, { ok: true });
  if (parts.length === 1 && parts[0] === 'ready') {
    if (method !== 'GET') notAllowed();
    return isWatch(url) ? watchView(controller, res, () => controller.allReady(), null) : send(res, 200, controller.allReady());
  }
  const noSuchPath = (): never => {
    throw new HttpError(404, 'NOT_FOUND', `no such path ${url.pathname}`);
  };
  if (parts[0] !== 'clonesets' || parts.length > 5) noSuchPath();

  if (parts.length === 1) {
    if (method === 'PUT' || method === 'POST') {
      const result = controller.apply(await readBody(req));
      return send(res, result.created ? 201 : 200, result);
    }
    if (method === 'GET') return send(res, 200, controller.names().map((name) => ({ name, ...controller.get(name) })));
    return notAllowed();
  }

  const name = parts[1];
  if (parts.length > 3) {
    if (parts.length !== 5 || parts[2] !== 'pods' || parts[4] !== 'labels') noSuchPath();
    if (method !== 'PATCH') notAllowed();
    return labelPod(controller, name, parts[3], await readBody(req), res);
  }
  if (parts.length === 2) {
    if (method === 'GET') {
      const got = controller.get(name);
      if (got !== undefined && isWatch(url)) return watchView(controller, res, () => controller.get(name), { name });
      return got === undefined ? unknownSet(name) : send(res, 200, got);
    }
    if (method === 'DELETE') {
      if (!(await controller.delete(name))) unknownSet(name);
      return send(res, 200, { name, deleted: true });
    }
    return notAllowed();
  }

  switch (parts[2]) {
    case 'ready': {
      if (method !== 'GET') notAllowed();
      const readySet = (): Array<Omit<ReadyEntry, 'cloneset'>> | undefined => controller.readySet(name)?.map(({ name: pod, ip, revision, ready: r }) => ({ name: pod, ip, revision, ready: r }));
      const ready = readySet();
      if (ready === undefined) return unknownSet(name);
      return isWatch(url) ? watchView(controller, res, readySet, { name }) : send(res, 200, ready);
    }
    case 'pause':
    case 'resume': {
      if (method !== 'POST' && method !== 'PUT') notAllowed();
      const rec = controller.setPaused(name, parts[2] === 'pause');
      return rec === undefined ? unknownSet(name) : send(res, 200, { name, paused: rec.spec.updateStrategy.paused, generation: rec.generation });
    }
    case 'status': {
      const got = controller.get(name);
      return got === undefined ? unknownSet(name) : send(res, 200, got.status);
    }
    default:
      return noSuchPath();
  }
}

/** `?watch=1` or `?watch=true`, as Kubernetes' API takes it. */
function isWatch(url: URL): boolean {
  const w = url.searchParams.get('watch');
  return w === '1' || w === 'true';
}

/**
 * Stream `view()` as it changes, until it is gone (undefined: the set was
 * deleted) or the client goes: the client learns of each change the moment
 * the controller makes it, and nobody polls. A client slower than the
 * changes gets the latest view once its socket drains, not every one in
 * between. `gone` is the object of the DELETED event.
 */
function watchView(controller: Controller, res: ServerResponse, view: () => unknown, gone: unknown): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  let sent: string | undefined;
  let waitingForDrain = false;
  const push = (): void => {
    if (res.writableEnded || res.destroyed) return;
    if (res.writableNeedDrain) {
      waitingForDrain = true;
      return;
    }
    const current = view();
    if (current === undefined) {
      res.end(`${JSON.stringify({ type: 'DELETED', object: gone })}\n`);
      return;
    }
    const object = JSON.stringify(current);
    if (object === sent) return;
    res.write(`{"type":"${sent === undefined ? 'ADDED' : 'MODIFIED'}","object":${object}}\n`);
    sent = object;
  };
  const unsubscribe = controller.onChange(push);
  res.on('drain', () => {
    if (!waitingForDrain) return;
    waitingForDrain = false;
    push();
  });
  res.on('close', unsubscribe);
  push();
}

/** kubectl label for one pod of a set. */
async function labelPod(controller: Controller, set: string, pod: string, text: string, res: ServerResponse): Promise<void> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'LAZYPULL_ERR_INVALID_ARGUMENT', 'the body must be JSON: {"labels": {KEY: VALUE | null}, "overwrite": false}', { field: 'body' });
  }
  const { patch, overwrite } = parseLabelRequest(body);
  const done = await controller.labelPod(set, pod, patch, overwrite);
  switch (done.outcome) {
    case 'unknownSet':
      throw new HttpError(404, 'NOT_FOUND', `CloneSet ${JSON.stringify(set)} not found`, { cloneset: set });
    case 'unknownPod':
      throw new HttpError(404, 'NOT_FOUND', `pod ${JSON.stringify(pod)} of CloneSet ${JSON.stringify(set)} not found`, { cloneset: set, pod });
    case 'conflict': {
      // kubectl's own words.
      const why = done.conflicts.map((c) => `'${c.key}' already has a value (${c.value})`).join('; ');
      throw new HttpError(409, 'CONFLICT', `${why}, and --overwrite is false`, { field: 'metadata.labels', pod });
    }
    case 'done': {
      const { outcome: _, ...view } = done;
      return send(res, 200, view);
    }
  }
}
