/**
 * The daemon's side of `lazypull pull` (protocol: pull-protocol.ts). The
 * daemon pulls exactly as the CLI would in its own process, with the
 * request's settings (containerd socket, namespace, snapshotter, plain
 * HTTP, hosts dir, docker config path), but warm: its code is compiled,
 * its channel to containerd is open, and nothing is loaded per pull.
 *
 * A pull the client gives up on (Ctrl-C) still runs to its end under its
 * containerd lease, as containerd's own pulls do; only the events stop.
 */
import { isAbsolute } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { isLazypullError, LazypullError, redact, toError } from '../errors';
import { DEFAULT_SNAPSHOTTER } from '../containerd/defaults';
import { ContainerdConnection, loadContainerdApi } from '../containerd/grpc-connection';
import type { PullResult } from '../containerd/pull-image';
import { pullReference } from '../containerd/pull-reference';
import { parsePlatform } from '../image/image-types';
import { warmUpRegistryReads } from '../fs/warm-up';
import { trace } from '../util/trace';
import { ERROR_CODE_TRAILER, PULL_PATH, type PullEvent, type PullRequest } from './pull-protocol';

type Log = (event: Record<string, unknown>) => void;

/** Progress of a fetched layer is sent at most this often. */
const PROGRESS_INTERVAL_MS = 200;

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value), 'utf8'),
  deserialize: (bytes: Buffer): unknown => JSON.parse(bytes.toString('utf8')),
};

export function pullServiceDefinition(): grpc.ServiceDefinition {
  return {
    Pull: {
      path: PULL_PATH,
      requestStream: false,
      responseStream: true,
      requestSerialize: json.serialize,
      requestDeserialize: json.deserialize,
      responseSerialize: json.serialize,
      responseDeserialize: json.deserialize,
    },
  };
}

function invalid(message: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `pull request: ${message}`);
}

/** The request as the CLI sends it, or an error naming what is wrong. */
export function checkPullRequest(value: unknown): PullRequest {
  if (typeof value !== 'object' || value === null) throw invalid('not an object');
  const r = value as Record<string, unknown>;
  const text = (key: string, required: boolean): string | undefined => {
    const v = r[key];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v === '') throw invalid(`${key} must be a non-empty string`);
    return v;
  };
  const path = (key: string, required: boolean): string | undefined => {
    const v = text(key, required);
    if (v !== undefined && !isAbsolute(v)) throw invalid(`${key} must be an absolute path, got ${v}`);
    return v;
  };
  if (r.plainHttp !== undefined && typeof r.plainHttp !== 'boolean') throw invalid('plainHttp must be a boolean');
  const hostsDir = path('hostsDir', false);
  const platform = text('platform', false);
  const dockerConfigPath = path('dockerConfigPath', false);
  return {
    reference: text('reference', true)!,
    address: path('address', true)!,
    namespace: text('namespace', true)!,
    snapshotter: text('snapshotter', true)!,
    plainHttp: r.plainHttp === true,
    ...(hostsDir !== undefined ? { hostsDir } : {}),
    ...(platform !== undefined ? { platform } : {}),
    ...(dockerConfigPath !== undefined ? { dockerConfigPath } : {}),
  };
}

export interface PullServiceOptions {
  log: Log;
  /**
   * Start mounting these layers now (Snapshotter.mountAhead). Used when the
   * pull prepares layers with the snapshotter `lazypull`: containerd's
   * Prepare for them will then come to this daemon (a daemon cannot ask
   * containerd under which name it is configured; `lazypull` is the name
   * the docs give it).
   */
  mountAhead?: (layers: Array<Record<string, string>>) => void;
}

export class PullService {
  /** One channel per containerd socket, shared by every pull and namespace. */
  private readonly connections = new Map<string, Promise<ContainerdConnection>>();
  private readonly log: Log;

  constructor(private readonly opts: PullServiceOptions) {
    this.log = opts.log;
    // Off the first pull's path: it would otherwise parse containerd's protos, and use the HTTP client
    // for the first time, while the user waits.
    setImmediate(() => {
      try {
        loadContainerdApi();
      } catch (err) {
        this.log({ level: 'warn', event: 'containerd_api_load_failed', error: toError(err).message });
      }
      void warmUpRegistryReads();
    }).unref();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return { Pull: (call: grpc.ServerWritableStream<unknown, PullEvent>) => void this.serve(call) };
  }

  /** Close the channels to containerd. */
  close(): void {
    for (const conn of this.connections.values()) void conn.then((c) => c.close(), () => undefined);
    this.connections.clear();
  }

  private async serve(call: grpc.ServerWritableStream<unknown, PullEvent>): Promise<void> {
    const started = process.hrtime.bigint();
    const send = (event: PullEvent): void => {
      if (!call.cancelled && !call.destroyed) call.write(event);
    };
    let request: PullRequest | undefined;
    try {
      request = checkPullRequest(call.request);
      const result = await this.pull(request, send);
      send({ result });
      call.end();
      const lazy = result.layers.filter((l) => l.mode === 'lazy').length;
      this.log({ level: 'info', event: 'pull', reference: request.reference, namespace: request.namespace, layers: result.layers.length, lazy,
        seconds: Number((Number(process.hrtime.bigint() - started) / 1e9).toFixed(3)) });
    } catch (value) {
      const err = toError(value);
      const message = redact(err.message);
      this.log({ level: 'info', event: 'pull_failed', reference: request?.reference, error: message });
      const trailers = new grpc.Metadata();
      if (isLazypullError(err)) trailers.set(ERROR_CODE_TRAILER, err.code);
      // Never UNIMPLEMENTED: that tells the CLI there is no pull service here, and it would pull again itself.
      const code = isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT') ? grpc.status.INVALID_ARGUMENT : grpc.status.UNKNOWN;
      // grpc-js turns an 'error' event into the call's status (destroy() would end the stream without one).
      if (!call.cancelled && !call.destroyed) call.emit('error', Object.assign(new Error(message), { code, details: message, metadata: trailers }));
    }
  }

  /** What `lazypull pull` does in its own process (src/cli/pull-command.ts), with a warm channel. */
  private pull(request: PullRequest, send: (event: PullEvent) => void): Promise<PullResult> {
    trace('daemon.pull');
    const lastProgress = new Map<number, number>();
    const source = {
      reference: request.reference,
      address: request.address,
      plainHttp: request.plainHttp,
      ...(request.platform !== undefined ? { platform: parsePlatform(request.platform) } : {}),
      ...(request.hostsDir !== undefined ? { hostsDir: request.hostsDir } : {}),
      ...(request.dockerConfigPath !== undefined ? { dockerConfigPath: request.dockerConfigPath } : {}),
    };
    return pullReference(source, async (address) => (await this.connection(address)).inNamespace(request.namespace), {
      snapshotter: request.snapshotter,
      onLayerProgress: (layer, done) => {
        const now = Date.now();
        if (done < layer.size && now - (lastProgress.get(layer.index) ?? 0) < PROGRESS_INTERVAL_MS) return;
        lastProgress.set(layer.index, now);
        send({ progress: { ...layer, done } });
      },
      onLayer: (layer) => send({ layer }),
      // The layers' TOCs load while containerd is asked to prepare them.
      ...(this.opts.mountAhead && request.snapshotter === DEFAULT_SNAPSHOTTER
        ? { onLayersToPrepare: (layers) => this.opts.mountAhead!(layers.map((l) => l.labels)) }
        : {}),
    });
  }

  private connection(address: string): Promise<ContainerdConnection> {
    let conn = this.connections.get(address);
    if (!conn) {
      conn = ContainerdConnection.connect(address);
      this.connections.set(address, conn);
      // A failed connect is not kept: the next pull tries again.
      conn.catch(() => this.connections.delete(address));
    }
    return conn;
  }
}
