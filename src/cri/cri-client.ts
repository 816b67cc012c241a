/**
 * A typed, promise-based client of the Kubernetes CRI v1 (RuntimeService and
 * ImageService) over a unix socket: the calls a kubelet makes, for the
 * in-place upgrade controller, tests and benchmarks. Every call has a
 * deadline; every failure is a LazypullError with code LAZYPULL_ERR_CRI that
 * names the method, the gRPC status and the ids involved (never credentials).
 *
 * Tracing: LAZYPULL_DEBUG=cri prints one line per call (method, status, time).
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { LazypullError, redact } from '../errors';
import type {
  AuthConfig,
  Container,
  ContainerConfig,
  ContainerFilter,
  ContainerStatusResponse,
  ExecSyncResult,
  Image,
  ImageSpec,
  PodSandbox,
  PodSandboxConfig,
  PodSandboxFilter,
  PodSandboxStatusResponse,
  StatusResponse,
  VersionResponse,
} from './cri-types';

/** proto/ at the package root (this file runs from dist/src/cri). */
const PROTO_DIR = join(__dirname, '..', '..', '..', 'proto');
const CRI_PROTO = 'k8s/cri/runtime/v1/api.proto';

/** Default deadline of a call. */
export const DEFAULT_CRI_TIMEOUT_MS = 60_000;
/** Default deadline of PullImage: a full pull of a large image takes a while. */
export const DEFAULT_PULL_TIMEOUT_MS = 10 * 60_000;

export interface CriClientOptions {
  /** Deadline of each call unless the call says otherwise; default 60 s. */
  timeoutMs?: number;
  /** Deadline of PullImage; default 10 min. */
  pullTimeoutMs?: number;
}

export interface CallOptions {
  /** This call's deadline in ms. */
  timeoutMs?: number;
}

export interface PullImageOptions extends CallOptions {
  auth?: AuthConfig;
  /** The sandbox the image is for (runtimes may pick its runtime handler). */
  sandboxConfig?: PodSandboxConfig;
}

export interface ExecSyncOptions extends CallOptions {
  /** Seconds the runtime lets the command run; 0 = no limit. Default 30. */
  timeoutSec?: number;
}

type Unary = (request: unknown, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, res: unknown) => void) => void;

interface CriPackage {
  runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor } };
}

let loaded: CriPackage | undefined;

function loadCri(): CriPackage {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(CRI_PROTO, {
      includeDirs: [PROTO_DIR],
      keepCase: false,
      longs: Number,
      enums: String,
      bytes: Buffer,
      defaults: true,
      oneofs: true,
    }),
  ) as unknown as CriPackage;
  return loaded;
}

/** `unix:///run/x.sock` or `/run/x.sock` → the grpc-js target. */
export function criTarget(endpoint: string): string {
  if (endpoint.startsWith('unix://')) return endpoint;
  if (endpoint.startsWith('/')) return `unix://${endpoint}`;
  throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `CRI endpoint ${JSON.stringify(endpoint)} is not a unix socket (unix:///path or /path)`, {
    endpoint,
  });
}

/** The gRPC status name (e.g. "NOT_FOUND") of a CRI error, or undefined for other errors. */
export function criStatus(err: unknown): string | undefined {
  if (err instanceof LazypullError && err.code === 'LAZYPULL_ERR_CRI') {
    const status = err.details.grpcStatus;
    return typeof status === 'string' ? status : undefined;
  }
  return undefined;
}

/** True for a CRI error with that gRPC status ("NOT_FOUND", ...). */
export function isCriStatus(err: unknown, status: keyof typeof grpc.status): boolean {
  return criStatus(err) === status;
}

function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? String(code);
}

function tracing(): boolean {
  return (process.env.LAZYPULL_DEBUG ?? '').split(',').some((n) => n.trim() === '*' || n.trim() === 'cri');
}

function trace(line: string): void {
  if (tracing()) process.stderr.write(`${new Date().toISOString()} lazypull:cri ${redact(line)}\n`);
}

/** Facts about a call for errors and traces: ids and image names, never credentials. */
type Facts = Record<string, string | number | undefined>;

export class CriClient {
  /** The endpoint as given (`unix:///…`). */
  readonly endpoint: string;
  private readonly runtime: grpc.Client;
  private readonly images: grpc.Client;
  private readonly timeoutMs: number;
  private readonly pullTimeoutMs: number;

  constructor(endpoint: string, opts: CriClientOptions = {}) {
    const target = criTarget(endpoint);
    this.endpoint = target;
    const pkg = loadCri().runtime.v1;
    const channelOptions = { 'grpc.max_receive_message_length': 64 << 20 };
    this.runtime = new pkg.RuntimeService(target, grpc.credentials.createInsecure(), channelOptions);
    // Same target and options: grpc-js shares one subchannel between both clients.
    this.images = new pkg.ImageService(target, grpc.credentials.createInsecure(), channelOptions);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_CRI_TIMEOUT_MS;
    this.pullTimeoutMs = opts.pullTimeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
  }

  /** One unary call with a deadline; errors become LAZYPULL_ERR_CRI. */
  private call<Res>(client: grpc.Client, method: string, request: unknown, timeoutMs: number, facts: Facts = {}): Promise<Res> {
    const fn = (client as unknown as Record<string, Unary>)[method];
    const started = Date.now();
    return new Promise<Res>((resolve, reject) => {
      fn.call(client, request, new grpc.Metadata(), { deadline: new Date(started + timeoutMs) }, (err, res) => {
        const ms = Date.now() - started;
        const factText = Object.entries(facts)
          .filter(([, v]) => v !== undefined && v !== '')
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(' ');
        if (err) {
          const status = statusName(err.code);
          trace(`${method} ${status} ${ms}ms ${factText}`);
          const deadline = err.code === grpc.status.DEADLINE_EXCEEDED ? ` (deadline ${timeoutMs} ms)` : '';
          reject(
            new LazypullError(
              'LAZYPULL_ERR_CRI',
              `CRI ${method}${factText ? ` (${factText})` : ''} failed: ${status}${deadline}: ${err.details || err.message}`,
              { method, grpcStatus: status, grpcCode: err.code, endpoint: this.endpoint, ...facts },
              { cause: err },
            ),
          );
          return;
        }
        trace(`${method} OK ${ms}ms ${factText}`);
        resolve(res as Res);
      });
    });
  }

  private deadline(opts: CallOptions | undefined, fallback = this.timeoutMs): number {
    return opts?.timeoutMs ?? fallback;
  }

  // ---------------------------------------------------------------- runtime

  version(opts?: CallOptions): Promise<VersionResponse> {
    return this.call(this.runtime, 'Version', { version: 'v1' }, this.deadline(opts));
  }

  /** Runtime and network conditions ("RuntimeReady", "NetworkReady"). */
  status(opts?: CallOptions & { verbose?: boolean }): Promise<StatusResponse> {
    return this.call(this.runtime, 'Status', { verbose: opts?.verbose === true }, this.deadline(opts));
  }

  /**
   * Poll Status until RuntimeReady and NetworkReady are true (containerd
   * loads the CNI config asynchronously after start), or fail after `timeoutMs`.
   */
  async waitUntilReady(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    for (;;) {
      try {
        const res = await this.status({ timeoutMs: Math.max(1000, Math.min(5000, deadline - Date.now())) });
        const conditions = res.status?.conditions ?? [];
        const notReady = ['RuntimeReady', 'NetworkReady'].filter((t) => !conditions.some((c) => c.type === t && c.status));
        if (notReady.length === 0) return;
        last = notReady
          .map((t) => {
            const c = conditions.find((x) => x.type === t);
            return `${t}=false${c?.reason ? ` (${c.reason}: ${c.message})` : ''}`;
          })
          .join(', ');
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() >= deadline) {
        throw new LazypullError('LAZYPULL_ERR_CRI', `CRI runtime at ${this.endpoint} not ready after ${timeoutMs} ms: ${last}`, {
          method: 'Status',
          grpcStatus: 'UNAVAILABLE',
          endpoint: this.endpoint,
        });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  // ---------------------------------------------------------------- sandboxes

  /** Create and start a pod sandbox; its id. */
  async runPodSandbox(config: PodSandboxConfig, opts?: CallOptions & { runtimeHandler?: string }): Promise<string> {
    const res = await this.call<{ podSandboxId: string }>(
      this.runtime,
      'RunPodSandbox',
      { config, runtimeHandler: opts?.runtimeHandler ?? '' },
      this.deadline(opts),
      { pod: config.metadata.name },
    );
    return res.podSandboxId;
  }

  /** Stop the sandbox and its containers and release its network. Idempotent. */
  async stopPodSandbox(podSandboxId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { podSandboxId }, this.deadline(opts), { podSandboxId });
  }

  /** Remove the sandbox and its containers. Idempotent. */
  async removePodSandbox(podSandboxId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { podSandboxId }, this.deadline(opts), { podSandboxId });
  }

  podSandboxStatus(podSandboxId: string, opts?: CallOptions & { verbose?: boolean }): Promise<PodSandboxStatusResponse> {
    return this.call(this.runtime, 'PodSandboxStatus', { podSandboxId, verbose: opts?.verbose === true }, this.deadline(opts), { podSandboxId });
  }

  async listPodSandbox(filter?: PodSandboxFilter, opts?: CallOptions): Promise<PodSandbox[]> {
    const res = await this.call<{ items: PodSandbox[] }>(this.runtime, 'ListPodSandbox', { filter: wireSandboxFilter(filter) }, this.deadline(opts));
    return res.items;
  }

  // ---------------------------------------------------------------- containers

  /** Create a container in a sandbox (pass the sandbox's own config again); its id. */
  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig, opts?: CallOptions): Promise<string> {
    const res = await this.call<{ containerId: string }>(
      this.runtime,
      'CreateContainer',
      { podSandboxId, config, sandboxConfig },
      this.deadline(opts),
      { podSandboxId, container: config.metadata.name, image: config.image.image },
    );
    return res.containerId;
  }

  async startContainer(containerId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { containerId }, this.deadline(opts), { containerId });
  }

  /**
   * SIGTERM, then SIGKILL after `gracePeriodSec` (0 kills at once). Idempotent.
   * The call's deadline is at least the grace period plus 30 s.
   */
  async stopContainer(containerId: string, gracePeriodSec: number, opts?: CallOptions): Promise<void> {
    const deadline = Math.max(this.deadline(opts), gracePeriodSec * 1000 + 30_000);
    await this.call(this.runtime, 'StopContainer', { containerId, timeout: gracePeriodSec }, deadline, { containerId });
  }

  /** Remove a container (a running one is killed). Idempotent. */
  async removeContainer(containerId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { containerId }, this.deadline(opts), { containerId });
  }

  async listContainers(filter?: ContainerFilter, opts?: CallOptions): Promise<Container[]> {
    const res = await this.call<{ containers: Container[] }>(this.runtime, 'ListContainers', { filter: wireContainerFilter(filter) }, this.deadline(opts));
    return res.containers;
  }

  containerStatus(containerId: string, opts?: CallOptions & { verbose?: boolean }): Promise<ContainerStatusResponse> {
    return this.call(this.runtime, 'ContainerStatus', { containerId, verbose: opts?.verbose === true }, this.deadline(opts), { containerId });
  }

  /** Run `cmd` in a running container; a non-zero exit is a result, not an error. */
  async execSync(containerId: string, cmd: string[], opts?: ExecSyncOptions): Promise<ExecSyncResult> {
    const timeoutSec = opts?.timeoutSec ?? 30;
    const deadline = opts?.timeoutMs ?? (timeoutSec > 0 ? timeoutSec * 1000 + 10_000 : this.timeoutMs);
    return this.call<ExecSyncResult>(this.runtime, 'ExecSync', { containerId, cmd, timeout: timeoutSec }, deadline, {
      containerId,
      cmd: cmd[0],
    });
  }

  // ---------------------------------------------------------------- images

  /** Pull an image; the runtime's image reference (containerd: the image ID). */
  async pullImage(image: string | ImageSpec, opts?: PullImageOptions): Promise<string> {
    const spec = imageSpec(image);
    const res = await this.call<{ imageRef: string }>(
      this.images,
      'PullImage',
      { image: spec, auth: opts?.auth, sandboxConfig: opts?.sandboxConfig },
      this.deadline(opts, this.pullTimeoutMs),
      { image: spec.image },
    );
    return res.imageRef;
  }

  /** The image if it is on the node, else undefined. */
  async imageStatus(image: string | ImageSpec, opts?: CallOptions): Promise<Image | undefined> {
    const spec = imageSpec(image);
    const res = await this.call<{ image: Image | null }>(this.images, 'ImageStatus', { image: spec, verbose: false }, this.deadline(opts), {
      image: spec.image,
    });
    return res.image ?? undefined;
  }

  async listImages(filter?: string | ImageSpec, opts?: CallOptions): Promise<Image[]> {
    const res = await this.call<{ images: Image[] }>(
      this.images,
      'ListImages',
      { filter: filter === undefined ? undefined : { image: imageSpec(filter) } },
      this.deadline(opts),
    );
    return res.images;
  }

  /** Remove an image from the node. Idempotent. */
  async removeImage(image: string | ImageSpec, opts?: CallOptions): Promise<void> {
    const spec = imageSpec(image);
    await this.call(this.images, 'RemoveImage', { image: spec }, this.deadline(opts), { image: spec.image });
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }
}

function imageSpec(image: string | ImageSpec): ImageSpec {
  return typeof image === 'string' ? { image } : image;
}

/** The flat filters of the TS API in the wire's nested form (states are wrapped). */
function wireSandboxFilter(f: PodSandboxFilter | undefined): unknown {
  if (f === undefined) return undefined;
  return { id: f.id ?? '', labelSelector: f.labelSelector ?? {}, ...(f.state !== undefined ? { state: { state: f.state } } : {}) };
}

function wireContainerFilter(f: ContainerFilter | undefined): unknown {
  if (f === undefined) return undefined;
  return {
    id: f.id ?? '',
    podSandboxId: f.podSandboxId ?? '',
    labelSelector: f.labelSelector ?? {},
    ...(f.state !== undefined ? { state: { state: f.state } } : {}),
  };
}
