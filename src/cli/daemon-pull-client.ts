/**
 * `lazypull pull` as a client of the snapshotter daemon. The CLI's entry
 * (scripts/cli-loader.js) runs this before it loads the CLI bundle: when
 * the daemon's socket answers, the daemon pulls (pull-service.ts) and this
 * process only prints what it reports, so a pull costs a Node.js start and
 * one request instead of loading the CLI, containerd's protos and a gRPC
 * client in a cold process (the largest part of a lazy cold start before
 * this, see docs/benchmarks.md).
 *
 * Same command, same output: the flags are those of `lazypull pull`, the
 * lines and JSON come from pull-output.ts, errors print as the CLI prints
 * them. It answers false, and the CLI pulls in its own process as before,
 * when it is not sure to do the same: an argument it does not know
 * (--help, a new flag), `--no-daemon`, no daemon socket, or a daemon
 * without the pull service.
 *
 * Only small modules may be imported here: no gRPC, no CLI parser.
 */
import { statSync } from 'node:fs';
import * as http2 from 'node:http2';
import { connect as netConnect } from 'node:net';
import { resolve as resolvePath } from 'node:path';
import type { PulledLayer, PullResult } from '../containerd/pull-image';
import { DEFAULT_CONTAINERD_ADDRESS, DEFAULT_CONTAINERD_NAMESPACE, DEFAULT_SNAPSHOTTER } from '../containerd/defaults';
import { redact } from '../errors';
import { defaultDockerConfigPath } from '../registry/docker-config';
import { parseReference } from '../registry/reference';
import { DEFAULT_SNAPSHOTTER_ADDRESS, ERROR_CODE_TRAILER, JsonFrameDecoder, PULL_PATH, encodeJsonFrame, type PullEvent, type PullRequest } from '../snapshotter/pull-protocol';
import { trace } from '../util/trace';
import { exitQuietlyOnEpipe } from './command-exit';
import type { Progress } from './progress';
import { layerLine, pullJson, pullSummary } from './pull-output';

/** The daemon's socket when neither --snapshotter-address nor this variable names one. */
export const SNAPSHOTTER_ADDRESS_ENV = 'LAZYPULL_SNAPSHOTTER_ADDRESS';
/** gRPC's UNIMPLEMENTED: the socket has no pull service (an older daemon, or another snapshotter). */
const GRPC_UNIMPLEMENTED = 12;

export interface ThinPullArgs {
  reference: string;
  address?: string;
  namespace?: string;
  snapshotter?: string;
  plainHttp: boolean;
  hostsDir?: string;
  platform?: string;
  json: boolean;
  snapshotterAddress?: string;
  noDaemon: boolean;
}

const VALUE_FLAGS = {
  '--address': 'address',
  '--namespace': 'namespace',
  '--snapshotter': 'snapshotter',
  '--hosts-dir': 'hostsDir',
  '--platform': 'platform',
  '--snapshotter-address': 'snapshotterAddress',
} as const;
const SWITCHES = { '--plain-http': 'plainHttp', '--json': 'json', '--no-daemon': 'noDaemon' } as const;

/**
 * `lazypull pull`'s arguments (after "pull"), or undefined for anything
 * this parser is not certain to read as the CLI's parser would.
 */
export function parseThinPullArgs(args: string[]): ThinPullArgs | undefined {
  const values: Partial<Record<(typeof VALUE_FLAGS)[keyof typeof VALUE_FLAGS], string>> = {};
  const switches = { plainHttp: false, json: false, noDaemon: false };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('-')) {
      positional.push(arg);
    } else if (arg in SWITCHES) {
      switches[SWITCHES[arg as keyof typeof SWITCHES]] = true;
    } else {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(0, eq) : arg;
      if (!(name in VALUE_FLAGS)) return undefined;
      const value = eq >= 0 ? arg.slice(eq + 1) : args[++i];
      if (value === undefined || value === '' || (eq < 0 && value.startsWith('-'))) return undefined;
      values[VALUE_FLAGS[name as keyof typeof VALUE_FLAGS]] = value;
    }
  }
  if (positional.length !== 1) return undefined;
  return { reference: positional[0]!, ...values, ...switches };
}

type CallOutcome =
  | { kind: 'unavailable'; why: string }
  | { kind: 'done' }
  | { kind: 'failed'; message: string; code?: string };

interface EventSink {
  event(event: PullEvent): void;
}

function header(headers: http2.IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function grpcMessage(headers: http2.IncomingHttpHeaders): string {
  const text = header(headers, 'grpc-message') ?? '';
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** One Pull call on the daemon's socket; events go to `sink` as they arrive. */
function callDaemon(socket: string, request: PullRequest, sink: EventSink): Promise<CallOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    let received = 0;
    const finish = (outcome: CallOutcome): void => {
      if (settled) return;
      settled = true;
      session.close();
      resolve(outcome);
    };
    // Before the first event nothing was pulled for this call that a second pull would not find: the CLI may pull itself.
    const broken = (why: string): void =>
      finish(received === 0 ? { kind: 'unavailable', why } : { kind: 'failed', message: `the snapshotter daemon at ${socket} went away during the pull (${why})` });
    const session = http2.connect('http://localhost', { createConnection: () => netConnect(socket) });
    session.on('error', (err: NodeJS.ErrnoException) => broken(err.code ?? err.message));

    const decoder = new JsonFrameDecoder();
    let status: { code: number; message: string; errorCode?: string } | undefined;
    const takeStatus = (headers: http2.IncomingHttpHeaders): void => {
      const code = header(headers, 'grpc-status');
      if (code === undefined) return;
      const errorCode = header(headers, ERROR_CODE_TRAILER);
      status = { code: Number(code), message: grpcMessage(headers), ...(errorCode ? { errorCode } : {}) };
    };

    const stream = session.request({ ':method': 'POST', ':path': PULL_PATH, 'content-type': 'application/grpc+json', te: 'trailers' });
    stream.on('response', (headers) => {
      const httpStatus = Number(headers[':status']);
      if (httpStatus !== 200) broken(`HTTP status ${httpStatus}`);
      // A call that fails before any message has its status here ("trailers-only").
      takeStatus(headers);
    });
    stream.on('trailers', takeStatus);
    stream.on('data', (chunk: Buffer) => {
      try {
        for (const message of decoder.push(chunk)) {
          received++;
          sink.event(message as PullEvent);
        }
      } catch (err) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        finish({ kind: 'failed', message: `bad answer from the snapshotter daemon at ${socket}: ${(err as Error).message}` });
      }
    });
    stream.on('error', (err: NodeJS.ErrnoException) => broken(err.code ?? err.message));
    stream.on('close', () => {
      if (!status) broken('the call ended without a status');
      else if (status.code === GRPC_UNIMPLEMENTED && received === 0) finish({ kind: 'unavailable', why: 'no pull service' });
      else if (status.code !== 0) finish({ kind: 'failed', message: status.message, ...(status.errorCode ? { code: status.errorCode } : {}) });
      else finish({ kind: 'done' });
    });
    stream.end(encodeJsonFrame(request));
  });
}

/** Prints the daemon's events as the in-process pull prints them. */
class PullPrinter implements EventSink {
  private progress: Progress | undefined;
  private progressLayer = -1;
  result: PullResult | undefined;

  constructor(private readonly json: boolean) {}

  event(event: PullEvent): void {
    if ('progress' in event) {
      const p = event.progress;
      if (this.progressLayer !== p.index) {
        this.progress?.stop();
        // Only a layer that is downloaded shows a bar, so only then is the bar's library loaded.
        const { createProgress } = require('./progress') as typeof import('./progress');
        this.progress = createProgress(`layer ${p.index} ${p.digest.slice(7, 19)}`, { json: this.json });
        this.progress.setTotal(p.size);
        this.progressLayer = p.index;
      }
      this.progress!.update(p.done);
    } else if ('layer' in event) {
      this.stopProgress();
      if (!this.json) process.stdout.write(layerLine(event.layer as PulledLayer));
    } else if ('result' in event) {
      this.result = event.result;
    }
  }

  stopProgress(): void {
    this.progress?.stop();
    this.progress = undefined;
    this.progressLayer = -1;
  }
}

/**
 * Pull through the daemon. True when the pull was done (or failed) there
 * and printed; false when the caller should pull in its own process.
 */
export async function pullThroughDaemon(args: string[]): Promise<boolean> {
  const flags = parseThinPullArgs(args);
  if (!flags || flags.noDaemon) return false;
  const explicit = flags.snapshotterAddress ?? process.env[SNAPSHOTTER_ADDRESS_ENV];
  const socket = resolvePath(explicit || DEFAULT_SNAPSHOTTER_ADDRESS);
  const decline = (why: string): false => {
    // Said only when the user pointed at a daemon; the default one being absent is normal.
    if (explicit) process.stderr.write(`lazypull: no pull service at ${socket} (${why}); pulling in this process\n`);
    return false;
  };
  try {
    if (!statSync(socket).isSocket()) return decline('not a socket');
  } catch (err) {
    return decline((err as NodeJS.ErrnoException).code ?? String(err));
  }
  try {
    parseReference(flags.reference);
  } catch {
    // The CLI reports a malformed reference, in its words.
    return false;
  }

  const started = process.hrtime.bigint();
  trace('pull.start');
  // Paths as this process sees them: the daemon runs elsewhere.
  const request: PullRequest = {
    reference: flags.reference,
    address: resolvePath(flags.address ?? process.env.CONTAINERD_ADDRESS ?? DEFAULT_CONTAINERD_ADDRESS),
    namespace: flags.namespace ?? process.env.CONTAINERD_NAMESPACE ?? DEFAULT_CONTAINERD_NAMESPACE,
    snapshotter: flags.snapshotter ?? DEFAULT_SNAPSHOTTER,
    plainHttp: flags.plainHttp,
    ...(flags.hostsDir !== undefined ? { hostsDir: resolvePath(flags.hostsDir) } : {}),
    ...(flags.platform !== undefined ? { platform: flags.platform } : {}),
    dockerConfigPath: resolvePath(defaultDockerConfigPath()),
  };
  exitQuietlyOnEpipe();
  const printer = new PullPrinter(flags.json);
  const outcome = await callDaemon(socket, request, printer);
  printer.stopProgress();
  if (outcome.kind === 'unavailable') return decline(outcome.why);
  if (outcome.kind === 'failed' || !printer.result) {
    const message = outcome.kind === 'failed' ? outcome.message : 'the snapshotter daemon sent no result';
    const code = outcome.kind === 'failed' && outcome.code ? ` [${outcome.code}]` : '';
    process.stderr.write(`lazypull: ${redact(message)}${code}\n`);
    process.exitCode = 1;
    return true;
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(flags.json ? pullJson(printer.result, seconds) : pullSummary(printer.result, seconds));
  return true;
}
