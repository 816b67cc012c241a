/**
 * A fault-injecting HTTP proxy on 127.0.0.1 in front of a loopback
 * registry. Blob GETs (the lazy range reads) can be answered with a
 * connection reset, a 500, a stall (no answer at all), a delay (forwarded
 * after `delayMs`), a truncated body (headers promise more than is sent)
 * or a corrupted body (bytes flipped, length kept). Everything else is forwarded untouched. Faults apply to the
 * next `times` blob GETs (default: until changed).
 */
import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type ProxyFault = 'none' | 'reset' | '500' | 'stall' | 'delay' | 'truncate' | 'corrupt';

export interface FaultyProxy {
  /** "127.0.0.1:PORT" */
  host: string;
  setFault(fault: ProxyFault, times?: number, opts?: { delayMs?: number }): void;
  /** Blob GETs seen, with the fault applied to each (and, for a delay, when the request went on). */
  readonly blobGets: Array<{ range: string | undefined; fault: ProxyFault; forwardedAt?: number }>;
  close(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;

export async function startFaultyProxy(upstream: string): Promise<FaultyProxy> {
  const [upHost, upPort] = upstream.split(':') as [string, string];
  if (upHost !== '127.0.0.1') throw new Error('the faulty proxy only forwards to 127.0.0.1');
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  let fault: ProxyFault = 'none';
  let remaining = Infinity;
  let delayMs = 1000;
  const blobGets: FaultyProxy['blobGets'] = [];

  const forward = (req: IncomingMessage, res: ServerResponse, transform?: 'truncate' | 'corrupt'): void => {
    const up = httpRequest(
      { host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers, agent },
      (upRes) => {
        if (transform === undefined || upRes.statusCode! >= 300) {
          res.writeHead(upRes.statusCode!, upRes.headers);
          upRes.pipe(res);
          return;
        }
        const parts: Buffer[] = [];
        upRes.on('data', (d: Buffer) => parts.push(d));
        upRes.on('end', () => {
          const body = Buffer.concat(parts);
          res.writeHead(upRes.statusCode!, upRes.headers);
          if (transform === 'corrupt') {
            for (let i = body.length >> 1; i < body.length; i += 101) body[i] = body[i]! ^ 0xff;
            if (body.length > 0) body[0] = body[0]! ^ 0x01;
            res.end(body);
          } else {
            // Promise the full length, send half, then drop the connection.
            res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
          }
        });
      },
    );
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  };

  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]!;
    if (req.method !== 'GET' || !BLOB_GET.test(path)) return forward(req, res);
    let applied: ProxyFault = 'none';
    if (remaining > 0) {
      applied = fault;
      remaining--;
    }
    const seen: FaultyProxy['blobGets'][number] = { range: req.headers.range, fault: applied };
    blobGets.push(seen);
    switch (applied) {
      case 'none':
        return forward(req, res);
      case 'reset': {
        const socket = req.socket as Socket & { resetAndDestroy?: () => void };
        if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
        else socket.destroy();
        return;
      }
      case '500':
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end('{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}');
        return;
      case 'stall':
        return; // never answer; the socket is closed by close()
      case 'delay':
        setTimeout(() => {
          seen.forwardedAt = Date.now();
          forward(req, res);
        }, delayMs);
        return;
      case 'truncate':
      case 'corrupt':
        return forward(req, res, applied);
    }
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    blobGets,
    setFault(next: ProxyFault, times = Infinity, opts: { delayMs?: number } = {}): void {
      fault = next;
      remaining = times;
      delayMs = opts.delayMs ?? 1000;
    },
    async close(): Promise<void> {
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
