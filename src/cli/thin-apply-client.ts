/**
 * `lazypull rollout apply` without the CLI bundle. The CLI's entry
 * (scripts/cli-loader.js) runs this first: one PUT with node:http instead of
 * loading the whole CLI and initialising `fetch` (undici, whose HTTP parser
 * is WebAssembly that V8 even finishes compiling before the process may
 * exit). The apply is on the timed path of a rollout, which starts with this
 * command.
 *
 * Same command, same output: the flags as commander reads them for `rollout
 * apply` (main.ts); the manifest read, the line or JSON printed and the
 * errors reported by the modules rollout-command.ts uses too
 * (rollout-apply-io.ts, controller-answer.ts, command-exit.ts); a failed
 * connection named by the code fetch gives it. It answers false, and the
 * full CLI runs the command, whenever it is not sure to do the same:
 * anything it does not read as the CLI's parser would (--help, a new flag,
 * an operand), a server URL fetch refuses or may treat otherwise (malformed,
 * with credentials, a port fetch blocks, another scheme), $LAZYPULL_DEBUG
 * (the CLI's error stacks name its own files), or a redirect (fetch follows
 * it; the server applied nothing). `LAZYPULL_THIN_CLIENT=0` (read by the
 * loader) skips this client.
 *
 * Only small modules may be imported here: no fetch, no CLI parser, no YAML.
 */
import type { ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { Readable } from 'node:stream';
import { exitQuietlyOnEpipe, reportError } from './command-exit';
import { answerJson, serverUrl, unreachableError } from './controller-answer';
import { APPLY_METHOD, APPLY_PATH, appliedOutput, readManifest, type ApplyAnswer } from './rollout-apply-io';

export interface ThinApplyArgs {
  /** `-` for stdin */
  file: string;
  server?: string;
  json: boolean;
}

const VALUE_FLAGS = { '--file': 'file', '--server': 'server' } as const;

/**
 * `lazypull rollout apply`'s arguments (after "apply"): `-f FILE`, `-fFILE`,
 * `--file FILE`, `--file=FILE`, `--server URL`, `--server=URL`, `--json`,
 * the last of a repeated flag counting, as commander reads them; undefined
 * for anything else, and for values commander would take but the command
 * then refuses or that look like a forgotten value (empty, `-x`).
 */
export function parseThinApplyArgs(args: string[]): ThinApplyArgs | undefined {
  const values: { file?: string; server?: string } = {};
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--json') {
      json = true;
      continue;
    }
    let name: keyof typeof VALUE_FLAGS;
    let value: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const flag = eq >= 0 ? arg.slice(0, eq) : arg;
      if (!(flag in VALUE_FLAGS)) return undefined;
      name = flag as keyof typeof VALUE_FLAGS;
      value = eq >= 0 ? arg.slice(eq + 1) : args[++i];
    } else if (arg.startsWith('-f')) {
      name = '--file';
      value = arg.length > 2 ? arg.slice(2) : args[++i];
    } else {
      return undefined;
    }
    if (value === undefined || value === '' || (value.startsWith('-') && value !== '-')) return undefined;
    if (value === '-' && name !== '--file') return undefined;
    values[VALUE_FLAGS[name]] = value;
  }
  if (values.file === undefined) return undefined;
  return { file: values.file, ...(values.server !== undefined ? { server: values.server } : {}), json };
}

/** Ports above 1023 that fetch refuses to connect to (the Fetch standard's "bad ports"); it refuses most below 1024 too. */
const FETCH_BAD_HIGH_PORTS = new Set(['1719', '1720', '1723', '2049', '3659', '4045', '4190', '5060', '5061', '6000', '6566', '6665', '6666', '6667', '6668', '6669', '6679', '6697', '10080']);

/** The URL, if fetch would send the request where node:http sends it; undefined for what fetch refuses or may treat otherwise. */
function plainRequestUrl(text: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '') return undefined;
  if (url.port !== '' && (Number(url.port) < 1024 || FETCH_BAD_HIGH_PORTS.has(url.port))) return undefined;
  return url;
}

/** fetch's (undici's) limits: connecting, then the time with no bytes from the server. */
const CONNECT_TIMEOUT_MS = 10_000;
const IDLE_TIMEOUT_MS = 300_000;
/** Statuses fetch follows when the answer names a Location. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

type PutOutcome =
  | { kind: 'answer'; status: number; text: string }
  | { kind: 'redirect' }
  /** No answer; `reason` as fetch names it. */
  | { kind: 'unreachable'; reason: string }
  /** The answer broke off. */
  | { kind: 'cut' };

/** The code fetch gives the same failure: Node's, except for a server that closes the connection without answering. */
function fetchReason(err: NodeJS.ErrnoException): string {
  if (err.code === 'ECONNRESET' && err.message === 'socket hang up') return 'UND_ERR_SOCKET';
  return err.code ?? err.message;
}

function put(url: URL, body: Buffer): Promise<PutOutcome> {
  const tls = url.protocol === 'https:';
  // Only the one the URL needs: node:https loads TLS.
  const request = (tls ? require('node:https') : require('node:http')).request as (url: URL, options: RequestOptions) => ClientRequest;
  return new Promise((resolve) => {
    let settled = false;
    let answered = false;
    const finish = (outcome: PutOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      req.destroy();
      resolve(outcome);
    };
    const req = request(url, { method: APPLY_METHOD, agent: false, headers: { 'content-type': 'application/yaml', 'content-length': body.length } });
    const connectTimer = setTimeout(() => finish({ kind: 'unreachable', reason: 'UND_ERR_CONNECT_TIMEOUT' }), CONNECT_TIMEOUT_MS);
    req.on('socket', (socket) => socket.once(tls ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer)));
    req.setTimeout(IDLE_TIMEOUT_MS, () => finish(answered ? { kind: 'cut' } : { kind: 'unreachable', reason: 'UND_ERR_HEADERS_TIMEOUT' }));
    req.on('error', (err) => finish(answered ? { kind: 'cut' } : { kind: 'unreachable', reason: fetchReason(err) }));
    req.on('response', (res: IncomingMessage) => {
      answered = true;
      const status = res.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status) && res.headers.location !== undefined) return finish({ kind: 'redirect' });
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      // As fetch's text(): UTF-8, a leading BOM dropped, bad bytes replaced.
      res.on('end', () => finish({ kind: 'answer', status, text: new TextDecoder().decode(Buffer.concat(chunks)) }));
      res.on('error', () => finish({ kind: 'cut' }));
      res.on('close', () => finish({ kind: 'cut' }));
    });
    req.end(body);
  });
}

/**
 * Apply without the CLI. True when the apply was done (or failed) and
 * printed; false when the caller should run the full CLI.
 */
export async function thinRolloutApply(args: string[]): Promise<boolean> {
  if (process.env.LAZYPULL_DEBUG) return false;
  const flags = parseThinApplyArgs(args);
  if (!flags) return false;
  const server = serverUrl(flags.server);
  const url = plainRequestUrl(`${server}${APPLY_PATH}`);
  if (!url) return false;

  exitQuietlyOnEpipe();
  let manifest: string;
  try {
    manifest = await readManifest(flags.file);
  } catch (err) {
    reportError(err);
    return true;
  }
  const outcome = await put(url, Buffer.from(manifest, 'utf8'));
  if (outcome.kind === 'redirect') {
    // The full CLI reads stdin again: it gets what this client read.
    if (flags.file === '-') Object.defineProperty(process, 'stdin', { value: Readable.from([Buffer.from(manifest, 'utf8')]), configurable: true, enumerable: true });
    return false;
  }
  try {
    if (outcome.kind === 'unreachable') throw unreachableError(server, outcome.reason);
    // fetch's words for an answer that breaks off.
    if (outcome.kind === 'cut') throw new TypeError('terminated');
    process.stdout.write(appliedOutput(answerJson<ApplyAnswer>(APPLY_METHOD, APPLY_PATH, outcome.status, outcome.text), flags.json));
  } catch (err) {
    reportError(err);
  }
  return true;
}
