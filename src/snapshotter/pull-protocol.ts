/**
 * `lazypull pull` served by the snapshotter daemon: one server-streaming
 * gRPC method on the daemon's own socket, next to containerd's Snapshots
 * service. Its messages are JSON (gRPC's `application/grpc+json`), so the
 * CLI side needs only node:http2 and this module: a pull then costs a
 * Node.js start and one request, while the daemon, warm and already
 * connected, talks to the registry and containerd (docs/benchmarks.md,
 * cold start).
 *
 * Framing is gRPC's: each message is a 1-byte compressed flag (always 0
 * here), a 4-byte big-endian length, and the JSON bytes; the call's status
 * comes in the `grpc-status` / `grpc-message` trailers.
 */
import type { PulledLayer, PullResult } from '../containerd/pull-image';

export const PULL_SERVICE = 'lazypull.v1.Pull';
export const PULL_PATH = `/${PULL_SERVICE}/Pull`;
/** Trailer with the LazypullError code of a failed pull, so the CLI prints what it would have printed itself. */
export const ERROR_CODE_TRAILER = 'lazypull-error-code';
/** Where the daemon listens unless told otherwise (its config's `address`), and so where `lazypull pull` looks for it. */
export const DEFAULT_SNAPSHOTTER_ADDRESS = '/run/lazypull/lazypull.sock';
/** A message larger than this is not a pull request or event: refuse it rather than buffer it. */
export const MAX_MESSAGE_BYTES = 4 << 20;

export interface PullRequest {
  reference: string;
  /** containerd's socket, as an absolute path (the daemon's working directory is not the user's). */
  address: string;
  namespace: string;
  snapshotter: string;
  plainHttp: boolean;
  hostsDir?: string;
  platform?: string;
  /** The docker config.json the CLI would take credentials from: a path, never the credentials. */
  dockerConfigPath?: string;
}

/** What the daemon streams back, in order: progress of fetched layers, each layer when done, then the result. */
export type PullEvent =
  | { progress: { index: number; digest: string; size: number; done: number } }
  | { layer: PulledLayer }
  | { result: PullResult };

export function encodeJsonFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Splits a byte stream into gRPC messages and parses each as JSON. */
export class JsonFrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const messages: unknown[] = [];
    while (this.pending.length >= 5) {
      if (this.pending[0] !== 0) throw new Error('compressed gRPC message: not supported');
      const length = this.pending.readUInt32BE(1);
      if (length > MAX_MESSAGE_BYTES) throw new Error(`gRPC message of ${length} bytes is too large`);
      if (this.pending.length < 5 + length) break;
      messages.push(JSON.parse(this.pending.subarray(5, 5 + length).toString('utf8')));
      this.pending = this.pending.subarray(5 + length);
    }
    return messages;
  }

  /** Bytes of an incomplete message left at the end of the stream. */
  get leftover(): number {
    return this.pending.length;
  }
}
