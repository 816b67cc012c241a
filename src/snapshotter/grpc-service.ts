/**
 * containerd's Snapshots gRPC service over a unix socket, backed by a
 * Snapshotter. Errors become the gRPC codes containerd maps to its errdefs;
 * anything unexpected is INTERNAL and logged, never a crash.
 */
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SnapshotError } from './snapshot-errors';
import type { Mount, SnapshotInfo, Snapshotter } from './snapshotter';
import { trace } from '../util/trace';

/** proto/ at the package root (this file runs from dist/src/snapshotter). */
export const PROTO_DIR = join(__dirname, '..', '..', '..', 'proto');

export function loadSnapshotsService(): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync('containerd/services/snapshots/v1/snapshots.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: grpc.ServiceClientConstructor } } } };
  };
  return pkg.containerd.services.snapshots.v1.Snapshots.service;
}

interface Timestamp {
  seconds: number;
  nanos: number;
}

function timestamp(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

function wireInfo(i: SnapshotInfo): Record<string, unknown> {
  return { name: i.name, parent: i.parent, kind: i.kind, created_at: timestamp(i.createdAt), updated_at: timestamp(i.updatedAt), labels: i.labels };
}

function wireMounts(mounts: Mount[]): Record<string, unknown> {
  return { mounts: mounts.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options })) };
}

type Log = (event: Record<string, unknown>) => void;
/** Called once per request with its result code ("OK", "NOT_FOUND", ...) and duration. */
export type Observe = (method: string, code: string, seconds: number) => void;

/** Wrap a handler: result or error goes back to containerd in the form it expects. */
function unary<Req, Res>(method: string, log: Log, observe: Observe, handler: (req: Req) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = process.hrtime.bigint();
    trace(`snapshotter.${method}`);
    const done = (code: string): void => {
      trace(`snapshotter.${method}.${code}`);
      observe(method, code, Number(process.hrtime.bigint() - started) / 1e9);
    };
    Promise.resolve()
      .then(() => handler(call.request))
      .then((res) => {
        done('OK');
        callback(null, res);
      })
      .catch((err: unknown) => {
        if (err instanceof SnapshotError) {
          done(err.code);
          if (err.code !== 'ALREADY_EXISTS' && err.code !== 'NOT_FOUND') log({ level: 'info', event: 'request_refused', method, code: err.code, error: err.message });
          callback({ code: err.grpcCode, details: err.message });
          return;
        }
        done('INTERNAL');
        log({ level: 'error', event: 'request_failed', method, error: (err as Error)?.message ?? String(err) });
        callback({ code: grpc.status.INTERNAL, details: (err as Error)?.message ?? 'internal error' });
      });
  };
}

interface KeyRequest { key: string }
interface PrepareRequest { key: string; parent: string; labels: Record<string, string> }
interface CommitRequest { name: string; key: string; labels: Record<string, string> }
interface UpdateRequest { info?: { name: string; labels: Record<string, string> }; update_mask?: { paths: string[] } }
interface ListRequest { filters: string[] }

export function snapshotsHandlers(snapshotter: Snapshotter, log: Log, observe: Observe = () => undefined): grpc.UntypedServiceImplementation {
  return {
    Prepare: unary<PrepareRequest, unknown>('Prepare', log, observe, async (r) => wireMounts(await snapshotter.prepare(r.key, r.parent, r.labels ?? {}))),
    View: unary<PrepareRequest, unknown>('View', log, observe, async (r) => wireMounts(await snapshotter.view(r.key, r.parent, r.labels ?? {}))),
    Mounts: unary<KeyRequest, unknown>('Mounts', log, observe, (r) => wireMounts(snapshotter.mounts(r.key))),
    Commit: unary<CommitRequest, unknown>('Commit', log, observe, async (r) => {
      await snapshotter.commit(r.name, r.key, r.labels ?? {});
      return {};
    }),
    Remove: unary<KeyRequest, unknown>('Remove', log, observe, async (r) => {
      await snapshotter.remove(r.key);
      return {};
    }),
    Stat: unary<KeyRequest, unknown>('Stat', log, observe, (r) => ({ info: wireInfo(snapshotter.stat(r.key)) })),
    Update: unary<UpdateRequest, unknown>('Update', log, observe, (r) => {
      if (!r.info) throw new SnapshotError('INVALID_ARGUMENT', 'Update needs info');
      return { info: wireInfo(snapshotter.update(r.info.name, r.info.labels ?? {}, r.update_mask?.paths ?? [])) };
    }),
    List: (call: grpc.ServerWritableStream<ListRequest, unknown>) => {
      try {
        const all = snapshotter.list(call.request.filters ?? []);
        // Batches keep each message well under gRPC's size limit.
        for (let i = 0; i < all.length; i += 100) call.write({ info: all.slice(i, i + 100).map(wireInfo) });
        call.end();
      } catch (err) {
        const code = err instanceof SnapshotError ? err.grpcCode : grpc.status.INTERNAL;
        // grpc-js turns an 'error' event into the call's status; destroy() would end the stream without one.
        call.emit('error', Object.assign(new Error((err as Error).message), { code }));
      }
    },
    Usage: unary<KeyRequest, unknown>('Usage', log, observe, (r) => snapshotter.usage(r.key)),
    Cleanup: unary<unknown, unknown>('Cleanup', log, observe, async () => {
      await snapshotter.cleanup();
      return {};
    }),
  };
}

/** Another service on the same socket (the daemon's pull service). */
export interface ExtraService {
  definition: grpc.ServiceDefinition;
  handlers: grpc.UntypedServiceImplementation;
}

/** Serve on a unix socket (a stale socket file from a previous run is replaced). */
export async function serveSnapshots(snapshotter: Snapshotter, socketPath: string, log: Log, observe?: Observe, extra: ExtraService[] = []): Promise<grpc.Server> {
  await fs.mkdir(dirname(socketPath), { recursive: true });
  await fs.rm(socketPath, { force: true });
  const server = new grpc.Server();
  server.addService(loadSnapshotsService(), snapshotsHandlers(snapshotter, log, observe));
  for (const service of extra) server.addService(service.definition, service.handlers);
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
  });
  return server;
}
