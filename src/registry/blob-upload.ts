/**
 * Pushing a blob: skip it if the registry has it, mount it from another
 * repository of the same registry if asked, else upload it in one streamed
 * PUT or, for big blobs, in PATCH chunks closed by a PUT (distribution's
 * upload protocol). A failed upload session is cancelled, best effort.
 */

import { Readable } from 'node:stream';
import { LazypullError } from '../errors';
import { repositoryScope } from './auth';
import { debug } from './debug';
import { headerValue, HttpResponse } from './http';
import { ImageReference, validateDigest, withDigest } from './reference';
import { Operation, operationError } from './registry-errors';
import { RegistrySession } from './session';

export interface PushBlobOptions {
  /** Repository name on the same registry to mount the blob from. */
  mountFrom?: string;
  /** If set and size > chunkSize, upload in PATCH chunks of this size; else one PUT. */
  chunkSize?: number;
}

export type PushBlobResult = 'exists' | 'mounted' | 'uploaded';

const OCTET_STREAM = 'application/octet-stream';

export async function pushBlob(
  session: RegistrySession,
  repo: ImageReference,
  digest: string,
  size: number,
  open: () => Readable,
  opts: PushBlobOptions = {},
): Promise<PushBlobResult> {
  validateDigest(digest);
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `blob ${digest}: size ${size} is not a byte count`, { digest });
  }
  if (opts.chunkSize !== undefined && (!Number.isSafeInteger(opts.chunkSize) || opts.chunkSize <= 0)) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `chunkSize ${opts.chunkSize} must be a positive integer`);
  }
  const target = withDigest(repo, digest);
  const base = `/v2/${repo.repository}/blobs`;
  // One scope set for the whole push, so a single token covers HEAD, mount and upload.
  const scopes = [repositoryScope(repo.repository, ['pull', 'push'])];
  if (opts.mountFrom !== undefined) scopes.push(repositoryScope(opts.mountFrom, ['pull']));

  const headOp: Operation = { action: 'HEAD blob', target };
  const head = await session.exchange(headOp, scopes, { method: 'HEAD', url: session.url(repo.registry, `${base}/${digest}`) });
  if (head.status === 200) return 'exists';
  if (head.status !== 404) throw session.fail(headOp, head);

  const startOp: Operation = { action: opts.mountFrom !== undefined ? `POST blob mount from ${opts.mountFrom}` : 'POST blob upload', target };
  const startUrl = session.url(repo.registry, `${base}/uploads/`);
  if (opts.mountFrom !== undefined) {
    startUrl.searchParams.set('mount', digest);
    startUrl.searchParams.set('from', opts.mountFrom);
  }
  let started = await session.exchange(startOp, scopes, {
    method: 'POST',
    url: startUrl,
    headers: { 'content-length': '0' },
  });
  if (started.status === 201 && opts.mountFrom !== undefined) return 'mounted';
  if (opts.mountFrom !== undefined && (started.status === 401 || started.status === 403)) {
    // Token registries refuse the whole POST when the source is not readable; a plain upload may still be allowed.
    debug(`mount of ${digest} from ${opts.mountFrom} refused (${started.status}); uploading instead`);
    scopes.pop();
    startOp.action = 'POST blob upload';
    started = await session.exchange(startOp, scopes, {
      method: 'POST',
      url: session.url(repo.registry, `${base}/uploads/`),
      headers: { 'content-length': '0' },
    });
  } else if (opts.mountFrom !== undefined && started.status === 202) {
    debug(`mount of ${digest} from ${opts.mountFrom} declined; uploading`);
  }
  if (started.status !== 202) throw session.fail(startOp, started);
  let location = session.location(startOp, started);

  try {
    if (opts.chunkSize !== undefined && size > opts.chunkSize) {
      location = await uploadChunks(session, target, scopes, location, size, open, opts.chunkSize);
      await finish(session, target, scopes, location, digest, undefined, size);
    } else {
      await finish(session, target, scopes, location, digest, open, size);
    }
  } catch (error) {
    await cancel(session, target, scopes, location);
    throw error;
  }
  return 'uploaded';
}

async function uploadChunks(
  session: RegistrySession,
  target: ImageReference,
  scopes: string[],
  location: URL,
  size: number,
  open: () => Readable,
  chunkSize: number,
): Promise<URL> {
  let offset = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const send = async (chunk: Buffer): Promise<void> => {
    const op: Operation = { action: `PATCH blob chunk at ${offset}`, target };
    const res = await session.exchange(op, scopes, {
      method: 'PATCH',
      url: location,
      headers: {
        'content-type': OCTET_STREAM,
        'content-range': `${offset}-${offset + chunk.length - 1}`,
      },
      body: () => chunk,
    });
    if (res.status !== 202) throw session.fail(op, res);
    // The session URL changes with every chunk (it carries the upload state).
    if (headerValue(res.headers, 'location') !== undefined) location = session.location(op, res);
    offset += chunk.length;
  };

  const source = open();
  try {
    for await (const data of source) {
      let buf = Buffer.isBuffer(data) ? data : Buffer.from(data as Uint8Array);
      while (buf.length > 0) {
        const take = Math.min(chunkSize - pendingBytes, buf.length);
        pending.push(buf.subarray(0, take));
        pendingBytes += take;
        buf = buf.subarray(take);
        if (pendingBytes === chunkSize) {
          const chunk = Buffer.concat(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          if (offset + chunk.length > size) throw sizeMismatch(target, size, 'more');
          await send(chunk);
        }
      }
    }
  } finally {
    source.destroy();
  }
  if (pendingBytes > 0) {
    if (offset + pendingBytes > size) throw sizeMismatch(target, size, 'more');
    await send(Buffer.concat(pending, pendingBytes));
  }
  if (offset !== size) throw sizeMismatch(target, size, 'fewer');
  return location;
}

/** Closes the upload with PUT ?digest=, carrying the whole blob when `open` is given. */
async function finish(
  session: RegistrySession,
  target: ImageReference,
  scopes: string[],
  location: URL,
  digest: string,
  open: (() => Readable) | undefined,
  size: number,
): Promise<void> {
  const url = new URL(location);
  url.searchParams.set('digest', digest);
  const op: Operation = { action: open !== undefined ? 'PUT blob upload' : 'PUT blob upload completion', target };
  // A failure of the caller's own stream (say, a file read error) is theirs, not the network's.
  let sourceError: unknown;
  const body =
    open === undefined
      ? undefined
      : (): Readable => {
          const stream = open();
          stream.once('error', (error) => {
            sourceError = error;
          });
          return stream;
        };
  let res: HttpResponse;
  try {
    res = await session.exchange(op, scopes, {
      method: 'PUT',
      url,
      headers: { 'content-type': OCTET_STREAM, 'content-length': String(open !== undefined ? size : 0) },
      ...(body !== undefined ? { body } : {}),
    });
  } catch (error) {
    if (sourceError !== undefined) throw sourceError;
    if (error instanceof LazypullError && error.details.errorCode === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
      throw sizeMismatch(target, size, 'a different number of');
    }
    throw error;
  }
  if (res.status !== 201 && res.status !== 204 && res.status !== 200) throw session.fail(op, res);
  const stored = headerValue(res.headers, 'docker-content-digest');
  if (stored !== undefined && stored !== digest) {
    throw operationError(op, 'LAZYPULL_ERR_DIGEST_MISMATCH', `registry stored the blob as ${stored}`, { stored });
  }
}

function sizeMismatch(target: ImageReference, size: number, how: string): LazypullError {
  return operationError(
    { action: 'push blob', target },
    'LAZYPULL_ERR_INVALID_ARGUMENT',
    `the blob stream yielded ${how} bytes than the declared size ${size}`,
    { size },
  );
}

async function cancel(session: RegistrySession, target: ImageReference, scopes: string[], location: URL): Promise<void> {
  try {
    await session.exchange({ action: 'DELETE blob upload', target }, scopes, { method: 'DELETE', url: location });
  } catch {
    // The registry purges abandoned uploads itself; this only frees them sooner.
  }
}
