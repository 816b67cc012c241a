/**
 * The registry client shared by the converter (push), the snapshotter
 * (lazy Range reads) and the controller (manifest lookups). It speaks the
 * OCI distribution API; transport, auth, uploads and errors live in their
 * own files next to this one.
 */

import { PassThrough, Readable } from 'node:stream';
import { LazypullError } from '../errors';
import { repositoryScope } from './auth';
import { pushBlob, PushBlobOptions, PushBlobResult } from './blob-upload';
import { computeDigest, digestAlgorithm, DigestVerifier } from './digest';
import { discard, headerValue, HttpResponse } from './http';
import { MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST } from './media-types';
import { formatReference, ImageReference, validateDigest, withDigest } from './reference';
import { networkError, Operation, operationError } from './registry-errors';
import { RegistrySession } from './session';

export interface RegistryClientOptions {
  /** true = every host over plain http; string[] = only these "host:port". Loopback is not plain automatically. */
  /** true: every host; a list: those "host:port"; a predicate: decided per host (hosts.toml). */
  plainHttp?: boolean | string[] | ((host: string) => boolean);
  /** Default: $DOCKER_CONFIG/config.json or ~/.docker/config.json. */
  dockerConfigPath?: string;
  /** Used for every host instead of the docker config. */
  credentials?: { username: string; password: string };
  /** Per request (headers and body; idle time for streamed bodies). Default 60000. */
  timeoutMs?: number;
  /** Retries of GET/HEAD on connection errors, 5xx and 429, with exponential backoff. Default 3. */
  retries?: number;
  /** First backoff delay; doubles per retry. Default 200. */
  retryDelayMs?: number;
  /** Connections kept per registry origin. Default 32. */
  maxConnectionsPerHost?: number;
  /** Largest manifest accepted. Default 4 MiB (containerd's limit). */
  maxManifestBytes?: number;
}

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  body: Buffer;
}

export interface ManifestDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface GetBlobOptions {
  /** Check the bytes against `digest` (and `size` if given); the stream errors at its end if they differ. Default true. */
  verify?: boolean;
  size?: number;
}

export type { PushBlobOptions, PushBlobResult };

const GENERIC_CONTENT_TYPES = new Set(['', 'application/json', 'text/plain', 'application/octet-stream']);

function contentType(res: HttpResponse): string {
  return (headerValue(res.headers, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

/** A registry that serves "application/json" leaves the type to the body, as containerd does. */
function mediaTypeFromBody(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { mediaType?: unknown; manifests?: unknown; config?: unknown };
    if (typeof parsed.mediaType === 'string') return parsed.mediaType;
    if (Array.isArray(parsed.manifests)) return OCI_INDEX;
    if (parsed.config !== undefined) return OCI_MANIFEST;
  } catch {
    // not JSON: the caller reports the unusable type
  }
  return undefined;
}

function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

export class RegistryClient {
  private readonly session: RegistrySession;
  private readonly maxManifestBytes: number;

  constructor(opts: RegistryClientOptions = {}) {
    this.session = new RegistrySession({
      plainHttp: opts.plainHttp ?? false,
      ...(opts.dockerConfigPath !== undefined ? { dockerConfigPath: opts.dockerConfigPath } : {}),
      ...(opts.credentials !== undefined ? { credentials: opts.credentials } : {}),
      timeoutMs: opts.timeoutMs ?? 60000,
      retries: opts.retries ?? 3,
      retryDelayMs: opts.retryDelayMs ?? 200,
      maxConnectionsPerHost: opts.maxConnectionsPerHost ?? 32,
    });
    this.maxManifestBytes = opts.maxManifestBytes ?? 4 * 1024 * 1024;
  }

  /** By tag or digest; a manifest fetched by digest is checked against it. */
  async getManifest(ref: ImageReference, accept: string[] = [...MANIFEST_ACCEPT]): Promise<FetchedManifest> {
    if (ref.digest !== undefined) validateDigest(ref.digest);
    const op: Operation = { action: 'GET manifest', target: ref };
    const res = await this.session.exchange(op, [repositoryScope(ref.repository, ['pull'])], {
      method: 'GET',
      url: this.session.url(ref.registry, `/v2/${ref.repository}/manifests/${manifestReference(ref)}`),
      headers: { accept: accept.join(', ') },
      maxBodyBytes: this.maxManifestBytes,
    });
    if (res.status !== 200) throw this.session.fail(op, res);
    const body = res.body;

    let mediaType = contentType(res);
    if (GENERIC_CONTENT_TYPES.has(mediaType)) mediaType = mediaTypeFromBody(body) ?? mediaType;
    if (!accept.includes(mediaType)) {
      throw operationError(
        op,
        'LAZYPULL_ERR_MANIFEST_UNSUPPORTED',
        `registry served media type "${mediaType || '(none)'}", expected one of ${accept.join(', ')}`,
        { mediaType },
      );
    }

    const served = headerValue(res.headers, 'docker-content-digest');
    const expected = ref.digest ?? served;
    const digest = computeDigest(body, expected !== undefined ? digestAlgorithm(expected) : 'sha256');
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw operationError(op, 'LAZYPULL_ERR_DIGEST_MISMATCH', `manifest content has digest ${digest}`, { actual: digest });
    }
    if (ref.digest === undefined && served !== undefined && served !== digest) {
      throw operationError(op, 'LAZYPULL_ERR_DIGEST_MISMATCH', `manifest content has digest ${digest}, registry says ${served}`, {
        actual: digest,
        served,
      });
    }
    return { mediaType, digest: ref.digest === undefined ? computeDigest(body) : digest, body };
  }

  /** HEAD of a manifest: its digest without fetching it, or undefined if it does not exist. */
  async headManifest(ref: ImageReference, accept: string[] = [...MANIFEST_ACCEPT]): Promise<ManifestDescriptor | undefined> {
    const op: Operation = { action: 'HEAD manifest', target: ref };
    const res = await this.session.exchange(op, [repositoryScope(ref.repository, ['pull'])], {
      method: 'HEAD',
      url: this.session.url(ref.registry, `/v2/${ref.repository}/manifests/${manifestReference(ref)}`),
      headers: { accept: accept.join(', ') },
    });
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw this.session.fail(op, res);
    const digest = headerValue(res.headers, 'docker-content-digest') ?? ref.digest;
    if (digest === undefined) {
      throw operationError(op, 'LAZYPULL_ERR_REGISTRY_STATUS', 'response has no Docker-Content-Digest header');
    }
    return { mediaType: contentType(res), digest, size: Number(headerValue(res.headers, 'content-length') ?? 0) };
  }

  /** PUT to the tag (or the digest if there is no tag); returns the manifest's digest. */
  async putManifest(ref: ImageReference, mediaType: string, body: Buffer): Promise<string> {
    const op: Operation = { action: 'PUT manifest', target: ref };
    const digest = computeDigest(body, ref.digest !== undefined ? digestAlgorithm(ref.digest) : 'sha256');
    if (ref.digest !== undefined && ref.digest !== digest) {
      throw operationError(op, 'LAZYPULL_ERR_DIGEST_MISMATCH', `manifest content has digest ${digest}`, { actual: digest });
    }
    const reference = ref.tag ?? ref.digest;
    if (reference === undefined) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `putManifest needs a tag or digest in ${formatReference(ref)}`);
    }
    const res = await this.session.exchange(op, [repositoryScope(ref.repository, ['pull', 'push'])], {
      method: 'PUT',
      url: this.session.url(ref.registry, `/v2/${ref.repository}/manifests/${reference}`),
      headers: { 'content-type': mediaType },
      body: () => body,
    });
    if (res.status !== 201 && res.status !== 200 && res.status !== 202) throw this.session.fail(op, res);
    const stored = headerValue(res.headers, 'docker-content-digest');
    if (stored !== undefined && stored.startsWith('sha256:') && digest.startsWith('sha256:') && stored !== digest) {
      throw operationError(op, 'LAZYPULL_ERR_DIGEST_MISMATCH', `registry stored the manifest as ${stored}, expected ${digest}`, {
        stored,
      });
    }
    return ref.digest ?? computeDigest(body);
  }

  async blobExists(repo: ImageReference, digest: string): Promise<boolean> {
    validateDigest(digest);
    const op: Operation = { action: 'HEAD blob', target: withDigest(repo, digest) };
    const res = await this.session.exchange(op, [repositoryScope(repo.repository, ['pull'])], {
      method: 'HEAD',
      url: this.session.url(repo.registry, `/v2/${repo.repository}/blobs/${digest}`),
    });
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw this.session.fail(op, res);
  }

  /**
   * The whole blob as a stream, following redirects to blob storage. The
   * stream is verified against `digest` unless `verify: false`; transport
   * failures mid-stream surface as REGISTRY_NETWORK stream errors.
   */
  async getBlob(repo: ImageReference, digest: string, opts: GetBlobOptions = {}): Promise<Readable> {
    validateDigest(digest);
    const target = withDigest(repo, digest);
    const op: Operation = { action: 'GET blob', target };
    const res = await this.session.exchange(op, [repositoryScope(repo.repository, ['pull'])], {
      method: 'GET',
      url: this.session.url(repo.registry, `/v2/${repo.repository}/blobs/${digest}`),
      response: 'stream',
    });
    if (res.status !== 200 || res.stream === undefined) {
      discard(res.stream);
      throw this.session.fail(op, res);
    }
    const source = res.stream;
    const out =
      opts.verify === false
        ? new PassThrough()
        : new DigestVerifier(digest, opts.size, `registry ${formatReference(target)}`);
    source.on('error', (error) => out.destroy(networkError(op, error, 1, res.url)));
    // A consumer that stops early must not leave the connection streaming.
    out.on('close', () => {
      if (!source.readableEnded) discard(source);
    });
    source.pipe(out);
    return out;
  }

  /**
   * Bytes start..endInclusive of a blob. Accepts 206 (checking
   * Content-Range) or a 200 from a server that ignores Range (sliced while
   * streaming, not buffered whole); the result is exactly the asked length.
   */
  async getBlobRange(repo: ImageReference, digest: string, start: number, endInclusive: number): Promise<Buffer> {
    validateDigest(digest);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(endInclusive) || start < 0 || endInclusive < start) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `invalid byte range ${start}-${endInclusive}`, { start, endInclusive });
    }
    const op: Operation = { action: `GET blob range ${start}-${endInclusive}`, target: withDigest(repo, digest) };
    return this.rangeGet(op, repo, digest, `bytes=${start}-${endInclusive}`, (res) => {
      if (res.status === 200) return { skip: start, length: endInclusive - start + 1, result: (data) => data };
      const sent = parseContentRange(res);
      if (sent !== undefined && (sent.start !== start || sent.end !== endInclusive)) {
        throw operationError(
          op,
          'LAZYPULL_ERR_REGISTRY_STATUS',
          `server sent bytes ${sent.start}-${sent.end} of ${sent.total ?? '*'}` + (sent.end < endInclusive ? ' (range extends past the end of the blob)' : ''),
          { status: 206 },
        );
      }
      return { skip: 0, length: endInclusive - start + 1, result: (data) => data };
    });
  }

  /**
   * The last `length` bytes of a blob (all of it when it is shorter) and the
   * blob's size, with one suffix-range request: for a reader that knows a
   * blob's digest but not its size (the snapshotter, from containerd's labels).
   */
  async getBlobTail(repo: ImageReference, digest: string, length: number): Promise<{ data: Buffer; blobSize: number }> {
    validateDigest(digest);
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `invalid tail length ${length}`, { length });
    }
    const op: Operation = { action: `GET blob tail (${length} bytes)`, target: withDigest(repo, digest) };
    return this.rangeGet(op, repo, digest, `bytes=-${length}`, (res) => {
      if (res.status === 200) {
        // A server that ignores Range: the tail is the end of the whole body.
        const blobSize = Number(headerValue(res.headers, 'content-length') ?? NaN);
        if (!Number.isSafeInteger(blobSize)) {
          throw operationError(op, 'LAZYPULL_ERR_REGISTRY_STATUS', 'server ignored the Range header and sent no Content-Length', { status: 200 });
        }
        const taken = Math.min(length, blobSize);
        return { skip: blobSize - taken, length: taken, result: (data) => ({ data, blobSize }) };
      }
      const sent = parseContentRange(res);
      if (sent?.total === undefined || sent.end !== sent.total - 1 || sent.end - sent.start + 1 !== Math.min(length, sent.total)) {
        throw operationError(op, 'LAZYPULL_ERR_REGISTRY_STATUS', `server answered a suffix range with Content-Range "${headerValue(res.headers, 'content-range') ?? ''}"`, {
          status: 206,
        });
      }
      const blobSize = sent.total;
      return { skip: 0, length: sent.end - sent.start + 1, result: (data) => ({ data, blobSize }) };
    });
  }

  /**
   * One Range GET: `plan` looks at the response (206, or 200 from a server
   * that ignores Range) and says which bytes of the body are wanted.
   */
  private async rangeGet<T>(
    op: Operation,
    repo: ImageReference,
    digest: string,
    range: string,
    plan: (res: HttpResponse) => { skip: number; length: number; result: (data: Buffer) => T },
  ): Promise<T> {
    const maxAttempts = 2;
    // Connection failures before the response are retried by the transport; a body cut off midway is retried here once.
    for (let attempt = 1; ; attempt++) {
      const res = await this.session.exchange(op, [repositoryScope(repo.repository, ['pull'])], {
        method: 'GET',
        url: this.session.url(repo.registry, `/v2/${repo.repository}/blobs/${digest}`),
        headers: { range },
        response: 'stream',
      });
      if ((res.status !== 206 && res.status !== 200) || res.stream === undefined) {
        discard(res.stream);
        // A 416 says the size: `Content-Range: bytes */SIZE`.
        const total = /\/(\d+)$/.exec(headerValue(res.headers, 'content-range') ?? '')?.[1];
        throw this.session.fail(op, res, res.status === 416 && total !== undefined ? `blob is ${total} bytes` : undefined);
      }
      let wanted: ReturnType<typeof plan>;
      try {
        wanted = plan(res);
      } catch (error) {
        discard(res.stream);
        throw error;
      }
      try {
        const { data, received } = await readSlice(res.stream, wanted.skip, wanted.length, res.status === 206);
        if (received !== wanted.length) {
          throw operationError(op, 'LAZYPULL_ERR_REGISTRY_STATUS', `received ${received} bytes, expected ${wanted.length}`, {
            status: res.status,
            received,
          });
        }
        return wanted.result(data);
      } catch (error) {
        if (error instanceof LazypullError) throw error;
        if (attempt >= maxAttempts) throw networkError(op, error, attempt, res.url);
      }
    }
  }

  pushBlob(
    repo: ImageReference,
    digest: string,
    size: number,
    open: () => Readable,
    opts?: PushBlobOptions,
  ): Promise<PushBlobResult> {
    return pushBlob(this.session, repo, digest, size, open, opts);
  }

  async close(): Promise<void> {
    await this.session.close();
  }
}

/** A 206's `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`). */
function parseContentRange(res: HttpResponse): { start: number; end: number; total?: number } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(headerValue(res.headers, 'content-range') ?? '');
  if (m === null) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), ...(m[3] === '*' ? {} : { total: Number(m[3]) }) };
}

/**
 * Reads `length` bytes after skipping `skip`. With `exact` (a 206) the body
 * is read to its end so the connection can be reused, and any surplus
 * shows as a longer count; otherwise (a 200 fallback) the rest is dropped.
 */
async function readSlice(stream: Readable, skip: number, length: number, exact: boolean): Promise<{ data: Buffer; received: number }> {
  const out = Buffer.allocUnsafe(length);
  let filled = 0;
  let received = 0;
  let toSkip = skip;
  // Leaving the loop early destroys the body; that is intended, not an error.
  stream.on('error', () => undefined);
  try {
    for await (const data of stream) {
      let chunk = data as Buffer;
      if (toSkip > 0) {
        if (chunk.length <= toSkip) {
          toSkip -= chunk.length;
          continue;
        }
        chunk = chunk.subarray(toSkip);
        toSkip = 0;
      }
      received += chunk.length;
      const take = Math.min(chunk.length, length - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (!exact && filled === length) break;
    }
  } finally {
    if (!stream.readableEnded) discard(stream);
  }
  return { data: filled === length ? out : out.subarray(0, filled), received: exact ? received : filled };
}
