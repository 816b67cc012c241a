/**
 * One gRPC channel to containerd's socket, shared by the service clients
 * in this folder, and the per-call metadata containerd reads: the
 * namespace (`containerd-namespace`) and, inside a lease, the lease ID
 * (`containerd-lease`). `withLease` gives a view on the same channel whose
 * calls carry the lease.
 *
 * Tracing: LAZYPULL_DEBUG=containerd (or "*") prints each call on stderr.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { redact } from '../errors';
import { ContainerdError, fromCallError } from './containerd-errors';

/** proto/ at the package root (this file runs from dist/src/containerd). */
export const CONTAINERD_PROTO_DIR = join(__dirname, '..', '..', '..', 'proto');

import { DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE } from './defaults';

export { DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE };

const SERVICES = {
  content: { file: 'containerd/services/content/v1/content.proto', path: 'containerd.services.content.v1.Content' },
  images: { file: 'containerd/services/images/v1/images.proto', path: 'containerd.services.images.v1.Images' },
  diff: { file: 'containerd/services/diff/v1/diff.proto', path: 'containerd.services.diff.v1.Diff' },
  leases: { file: 'containerd/services/leases/v1/leases.proto', path: 'containerd.services.leases.v1.Leases' },
  snapshots: { file: 'containerd/services/snapshots/v1/snapshots.proto', path: 'containerd.services.snapshots.v1.Snapshots' },
} as const;

export type ServiceName = keyof typeof SERVICES;

let constructors: Record<ServiceName, grpc.ServiceClientConstructor> | undefined;

function serviceConstructors(): Record<ServiceName, grpc.ServiceClientConstructor> {
  if (constructors) return constructors;
  const definition = protoLoader.loadSync(
    Object.values(SERVICES).map((s) => s.file),
    { includeDirs: [CONTAINERD_PROTO_DIR], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true },
  );
  const root = grpc.loadPackageDefinition(definition);
  const lookup = (path: string): grpc.ServiceClientConstructor => {
    let node: unknown = root;
    for (const part of path.split('.')) node = (node as Record<string, unknown>)[part];
    return node as grpc.ServiceClientConstructor;
  };
  const built = {} as Record<ServiceName, grpc.ServiceClientConstructor>;
  for (const [name, s] of Object.entries(SERVICES) as Array<[ServiceName, (typeof SERVICES)[ServiceName]]>) built[name] = lookup(s.path);
  constructors = built;
  return built;
}

/**
 * Parse containerd's API definitions now rather than at the first
 * connection (25-30 ms): a long-running process that will talk to
 * containerd later (the snapshotter daemon, for `lazypull pull`) calls
 * this while idle, so that the first request does not pay for it.
 */
export function loadContainerdApi(): void {
  serviceConstructors();
}

function tracing(): boolean {
  return (process.env.LAZYPULL_DEBUG ?? '').split(',').some((n) => n.trim() === '*' || n.trim() === 'containerd');
}

function trace(message: string): void {
  if (tracing()) process.stderr.write(`${new Date().toISOString()} lazypull:containerd ${redact(message)}\n`);
}

export interface ConnectOptions {
  /** containerd namespace for every call; default "default". */
  namespace?: string;
  /** How long to wait for the socket to answer; default 10000. */
  connectTimeoutMs?: number;
}

/** The shared channel and clients behind every view of one connection. */
interface Shared {
  channel: grpc.Channel;
  clients: Map<ServiceName, grpc.Client>;
  closed: boolean;
}

type UnaryFn = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;
type DuplexFn = (md: grpc.Metadata, opts?: grpc.CallOptions) => grpc.ClientDuplexStream<unknown, unknown>;

export class ContainerdConnection {
  private constructor(
    /** The socket path. */
    readonly address: string,
    readonly namespace: string,
    private readonly shared: Shared,
    /** The lease every call of this view carries, if any. */
    readonly lease?: string,
  ) {}

  /**
   * Open a channel to containerd's unix socket and wait until it answers.
   * A missing socket, a path that is not a socket, or a socket nobody
   * answers on is an UNAVAILABLE ContainerdError that names the path.
   */
  /** Fails with a clear UNAVAILABLE error when `address` is not a unix socket (containerd not running, wrong path). */
  static async checkSocket(address: string): Promise<void> {
    try {
      const st = await fs.stat(address);
      if (!st.isSocket()) throw new ContainerdError('UNAVAILABLE', `${address} is not a unix socket; pass containerd's socket with --address`, { address });
    } catch (err) {
      if (err instanceof ContainerdError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw new ContainerdError(
        'UNAVAILABLE',
        code === 'ENOENT'
          ? `containerd socket ${address} does not exist: is containerd running? (pass its socket with --address)`
          : `cannot use containerd socket ${address} (${code ?? String(err)})`,
        { address },
      );
    }
  }

  static async connect(address: string = DEFAULT_CONTAINERD_ADDRESS, opts: ConnectOptions = {}): Promise<ContainerdConnection> {
    const namespace = opts.namespace ?? DEFAULT_CONTAINERD_NAMESPACE;
    if (namespace === '') throw new ContainerdError('INVALID_ARGUMENT', 'containerd namespace must not be empty', { address });
    await ContainerdConnection.checkSocket(address);
    const channel = new grpc.Channel(`unix://${address}`, grpc.credentials.createInsecure(), {
      // Layers travel in 1 MiB messages; containerd's answers are small, but lists can be long.
      'grpc.max_receive_message_length': 64 << 20,
    });
    const conn = new ContainerdConnection(address, namespace, { channel, clients: new Map(), closed: false });
    const timeoutMs = opts.connectTimeoutMs ?? 10_000;
    try {
      await new Promise<void>((resolve, reject) => {
        conn.client('leases').waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      conn.close();
      throw new ContainerdError('UNAVAILABLE', `cannot connect to containerd at ${address} within ${timeoutMs} ms: ${(err as Error).message}`, { address }, { cause: err });
    }
    trace(`connected to ${address} (namespace ${namespace})`);
    return conn;
  }

  /** The same channel, for calls in another namespace (a daemon serving many clients keeps one channel). */
  inNamespace(namespace: string): ContainerdConnection {
    if (namespace === '') throw new ContainerdError('INVALID_ARGUMENT', 'containerd namespace must not be empty', { address: this.address });
    return new ContainerdConnection(this.address, namespace, this.shared, this.lease);
  }

  /** The same channel and namespace; every call carries `containerd-lease: id`. */
  withLease(id: string): ContainerdConnection {
    return new ContainerdConnection(this.address, this.namespace, this.shared, id);
  }

  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', this.namespace);
    if (this.lease !== undefined) md.set('containerd-lease', this.lease);
    return md;
  }

  private client(service: ServiceName): grpc.Client {
    if (this.shared.closed) throw new ContainerdError('CANCELLED', `connection to containerd at ${this.address} is closed`, { address: this.address });
    let client = this.shared.clients.get(service);
    if (!client) {
      const Ctor = serviceConstructors()[service];
      client = new Ctor(`unix://${this.address}`, grpc.credentials.createInsecure(), { channelOverride: this.shared.channel });
      this.shared.clients.set(service, client);
    }
    return client;
  }

  /** A unary call; failures become ContainerdErrors with the status containerd answered. */
  async unary<Res>(service: ServiceName, method: string, request: unknown, opts: grpc.CallOptions = {}): Promise<Res> {
    const fn = (this.client(service) as unknown as Record<string, UnaryFn>)[method];
    if (typeof fn !== 'function') throw new Error(`internal: ${service} has no method ${method} in the loaded protos`);
    const started = Date.now();
    try {
      const res = await new Promise<unknown>((resolve, reject) => {
        fn.call(this.client(service), request, this.metadata(), opts, (err, value) => (err ? reject(err) : resolve(value)));
      });
      trace(`${service}.${method} ok in ${Date.now() - started} ms`);
      return res as Res;
    } catch (err) {
      const failure = fromCallError(err, `${service}.${method}`, this.address);
      trace(`${service}.${method} failed in ${Date.now() - started} ms: ${failure.status} ${failure.message}`);
      throw failure;
    }
  }

  /** A bidirectional stream (content Write); the caller maps its errors with fromCallError. */
  duplex(service: ServiceName, method: string): grpc.ClientDuplexStream<unknown, unknown> {
    const fn = (this.client(service) as unknown as Record<string, DuplexFn>)[method];
    if (typeof fn !== 'function') throw new Error(`internal: ${service} has no method ${method} in the loaded protos`);
    trace(`${service}.${method} stream opened`);
    return fn.call(this.client(service), this.metadata());
  }

  /** Close the channel (every view of this connection). Safe to call twice. */
  close(): void {
    if (this.shared.closed) return;
    this.shared.closed = true;
    // The clients share this channel: closing it once closes them all.
    this.shared.channel.close();
    this.shared.clients.clear();
  }
}
