/**
 * The registry client against a real docker-registry (anonymous), plus
 * small loopback HTTP servers for behaviour distribution does not show:
 * redirects to blob storage, servers that ignore Range, 5xx retries, hangs.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { isLazypullError } from '../src/errors';
import { RegistryClient } from '../src/registry/client';
import { computeDigest } from '../src/registry/digest';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_V1_SIGNED, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST } from '../src/registry/media-types';
import { formatReference, ImageReference, parseReference } from '../src/registry/reference';
import { freePort, RegistryFixture, skipWithoutRegistry, startRegistry } from './support/registry-fixture';

function chunked(data: Buffer, piece: number): () => Readable {
  return () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < data.length; i += piece) parts.push(data.subarray(i, i + piece));
    return Readable.from(parts);
  };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function manifestFor(config: Buffer, layers: Buffer[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: computeDigest(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: OCI_LAYER_GZIP, digest: computeDigest(l), size: l.length })),
    }),
  );
}

/** A loopback HTTP server for one test; closed by the returned function. */
async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ origin: string; host: string; server: Server }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, server };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('registry client against docker-registry', function () {
  let registry: RegistryFixture | undefined;
  let client: RegistryClient;
  let reg: RegistryFixture;

  before(async function () {
    skipWithoutRegistry(this);
    registry = await startRegistry();
    reg = registry;
    client = new RegistryClient({ plainHttp: [reg.host], retries: 1, retryDelayMs: 10 });
  });
  after(async () => {
    await client?.close();
    await registry?.stop();
  });

  const repo = (name: string, tag = 'latest'): ImageReference => parseReference(`${reg.host}/${name}:${tag}`);

  it('pushes a blob monolithically, then reports it exists', async () => {
    const data = randomBytes(300 * 1024);
    const digest = computeDigest(data);
    const target = repo('mono/blob');
    assert.equal(await client.blobExists(target, digest), false);
    let opened = 0;
    const result = await client.pushBlob(target, digest, data.length, () => {
      opened++;
      return chunked(data, 7000)();
    });
    assert.equal(result, 'uploaded');
    assert.equal(opened, 1);
    assert.equal(await client.blobExists(target, digest), true);
    assert.equal(await client.pushBlob(target, digest, data.length, chunked(data, 7000)), 'exists');
    assert.deepEqual(await readAll(await client.getBlob(target, digest)), data);
  });

  it('pushes a blob in PATCH chunks (last chunk partial, odd source chunking)', async () => {
    const data = randomBytes(256 * 1024 + 123);
    const digest = computeDigest(data);
    const target = repo('chunked/blob');
    assert.equal(await client.pushBlob(target, digest, data.length, chunked(data, 10007), { chunkSize: 64 * 1024 }), 'uploaded');
    assert.deepEqual(await readAll(await client.getBlob(target, digest, { size: data.length })), data);
  });

  it('uploads monolithically when the blob is not bigger than chunkSize', async () => {
    const data = randomBytes(1000);
    const digest = computeDigest(data);
    assert.equal(await client.pushBlob(repo('small/blob'), digest, data.length, chunked(data, 100), { chunkSize: 1000 }), 'uploaded');
    assert.equal(await client.blobExists(repo('small/blob'), digest), true);
  });

  it('mounts a blob from another repository, and falls back to upload when the source lacks it', async () => {
    const data = randomBytes(4096);
    const digest = computeDigest(data);
    await client.pushBlob(repo('mount/source'), digest, data.length, chunked(data, 1000));
    let opened = 0;
    const open = (): Readable => {
      opened++;
      return Readable.from([data]);
    };
    assert.equal(await client.pushBlob(repo('mount/target'), digest, data.length, open, { mountFrom: 'mount/source' }), 'mounted');
    assert.equal(opened, 0);
    assert.equal(await client.blobExists(repo('mount/target'), digest), true);

    const other = randomBytes(2048);
    const otherDigest = computeDigest(other);
    assert.equal(
      await client.pushBlob(repo('mount/target'), otherDigest, other.length, () => Readable.from([other]), { mountFrom: 'mount/source' }),
      'uploaded',
    );
    assert.equal(await client.blobExists(repo('mount/target'), otherDigest), true);
  });

  it('rejects a blob whose content does not match its digest, or whose stream is short', async () => {
    const data = randomBytes(1000);
    const wrong = computeDigest(Buffer.from('something else'));
    await assert.rejects(client.pushBlob(repo('bad/blob'), wrong, data.length, () => Readable.from([data])), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH'), String(err));
      assert.match(err.message, new RegExp(`registry ${reg.host}/bad/blob@${wrong}: PUT blob upload failed: 400 Bad Request`));
      return true;
    });
    const digest = computeDigest(data);
    await assert.rejects(
      client.pushBlob(repo('bad/blob'), digest, data.length + 10, () => Readable.from([data]), { chunkSize: 300 }),
      (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT') && /fewer bytes than the declared size/.test(err.message),
    );
    await assert.rejects(
      client.pushBlob(repo('bad/blob'), digest, data.length + 10, () => Readable.from([data])),
      (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT') && /declared size/.test(err.message),
    );
    assert.equal(await client.blobExists(repo('bad/blob'), digest), false);
  });

  it("passes the caller's own stream error through unchanged", async () => {
    const data = randomBytes(1000);
    const failure = new Error('disk on fire');
    const failing = (): Readable =>
      new Readable({
        read() {
          this.destroy(failure);
        },
      });
    await assert.rejects(client.pushBlob(repo('bad/source'), computeDigest(data), data.length, failing), (err: unknown) => err === failure);
    await assert.rejects(
      client.pushBlob(repo('bad/source'), computeDigest(data), data.length, failing, { chunkSize: 100 }),
      (err: unknown) => err === failure,
    );
  });

  it('pushes a manifest by tag and fetches it by tag and by digest', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const layer = randomBytes(5000);
    const target = repo('app/image', 'v1');
    await client.pushBlob(target, computeDigest(config), config.length, () => Readable.from([config]));
    await client.pushBlob(target, computeDigest(layer), layer.length, () => Readable.from([layer]));
    const manifest = manifestFor(config, [layer]);

    const digest = await client.putManifest(target, OCI_MANIFEST, manifest);
    assert.equal(digest, computeDigest(manifest));

    const byTag = await client.getManifest(target);
    assert.deepEqual(byTag, { mediaType: OCI_MANIFEST, digest, body: manifest });
    const byDigest = await client.getManifest({ registry: reg.host, repository: 'app/image', digest });
    assert.deepEqual(byDigest, byTag);
    assert.deepEqual(await client.headManifest(target), { mediaType: OCI_MANIFEST, digest, size: manifest.length });
    assert.equal(await client.headManifest(repo('app/image', 'nope')), undefined);

    // An index pointing at it, pushed by digest only.
    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest, size: manifest.length }] }),
    );
    const indexDigest = computeDigest(index);
    assert.equal(await client.putManifest({ registry: reg.host, repository: 'app/image', digest: indexDigest }, OCI_INDEX, index), indexDigest);
    assert.equal((await client.getManifest({ registry: reg.host, repository: 'app/image', digest: indexDigest })).mediaType, OCI_INDEX);
  });

  it('refuses to put a manifest under a digest it does not have', async () => {
    const body = Buffer.from('{}');
    const ref = { registry: reg.host, repository: 'app/x', digest: computeDigest(Buffer.from('other')) };
    await assert.rejects(client.putManifest(ref, OCI_MANIFEST, body), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH'));
  });

  it('reads byte ranges with 206 and checks their length', async () => {
    const data = randomBytes(100000);
    const digest = computeDigest(data);
    const target = repo('range/blob');
    await client.pushBlob(target, digest, data.length, () => Readable.from([data]));
    for (const [start, end] of [
      [0, 0],
      [0, 99999],
      [12345, 23456],
      [99999, 99999],
    ] as const) {
      assert.deepEqual(await client.getBlobRange(target, digest, start, end), data.subarray(start, end + 1), `${start}-${end}`);
    }
    await assert.rejects(client.getBlobRange(target, digest, 99990, 100010), (err: unknown) => {
      assert.ok(isLazypullError(err), String(err));
      assert.match(err.message, /range/);
      return true;
    });
    await assert.rejects(client.getBlobRange(target, digest, 5, 4), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'));
  });

  it("reads a blob's tail with one suffix range and learns the blob's size", async () => {
    const data = randomBytes(100000);
    const digest = computeDigest(data);
    const target = repo('range/tail');
    await client.pushBlob(target, digest, data.length, () => Readable.from([data]));
    for (const length of [1, 51, 4096, 99999, 100000, 250000]) {
      const tail = await client.getBlobTail(target, digest, length);
      assert.equal(tail.blobSize, data.length, `size with a ${length}-byte tail`);
      assert.deepEqual(tail.data, data.subarray(Math.max(0, data.length - length)), `${length}-byte tail`);
    }
    await assert.rejects(client.getBlobTail(target, digest, 0), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'));
    await assert.rejects(client.getBlobTail(repo('does/not-exist'), digest, 10), (err: unknown) =>
      isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NOT_FOUND') && err.message.includes('does/not-exist'),
    );
  });

  it('serves many concurrent range reads over reused connections', async () => {
    const data = randomBytes(64 * 1024);
    const digest = computeDigest(data);
    const target = repo('range/many');
    await client.pushBlob(target, digest, data.length, () => Readable.from([data]));
    const reads = Array.from({ length: 200 }, (_, i) => {
      const start = (i * 317) % 60000;
      return client.getBlobRange(target, digest, start, start + 999).then((got) => assert.deepEqual(got, data.subarray(start, start + 1000)));
    });
    await Promise.all(reads);
  });

  it('names the reference and status in a 404', async () => {
    const missing = repo('does/not-exist', 'v9');
    await assert.rejects(client.getManifest(missing), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NOT_FOUND'), String(err));
      assert.ok(err.message.startsWith(`registry ${reg.host}/does/not-exist:v9: GET manifest failed: 404 Not Found`), err.message);
      assert.equal(err.details.status, 404);
      assert.equal(err.details.repository, 'does/not-exist');
      return true;
    });
    const digest = computeDigest(Buffer.from('nothing'));
    await assert.rejects(client.getBlob(repo('does/not-exist'), digest), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NOT_FOUND'), String(err));
      assert.ok(err.message.includes(`${reg.host}/does/not-exist@${digest}`), err.message);
      return true;
    });
    await assert.rejects(client.getBlobRange(repo('does/not-exist'), digest, 0, 10), (err: unknown) =>
      isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NOT_FOUND'),
    );
  });

  it('uses https unless the host is listed as plain, even on loopback', async () => {
    const strict = new RegistryClient({ retries: 0 });
    try {
      await assert.rejects(strict.getManifest(repo('app/image', 'v1')), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NETWORK'), String(err));
        assert.match(err.message, new RegExp(`connection to https://${reg.host}`));
        return true;
      });
    } finally {
      await strict.close();
    }
  });

  it('fails the blob stream when the content does not match the digest', async () => {
    const data = randomBytes(1000);
    const digest = computeDigest(data);
    const target = repo('verify/blob');
    await client.pushBlob(target, digest, data.length, () => Readable.from([data]));
    await assert.rejects(readAll(await client.getBlob(target, digest, { size: 999 })), (err: unknown) =>
      isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH'),
    );
    assert.equal((await readAll(await client.getBlob(target, digest, { verify: false }))).length, 1000);
  });
});

describe('registry client transport behaviour', () => {
  const digest = computeDigest(Buffer.from('x'));
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    while (closers.length > 0) await closers.pop()!();
  });
  function track(client: RegistryClient): RegistryClient {
    closers.push(() => client.close());
    return client;
  }
  async function track$(s: Promise<{ origin: string; host: string; server: Server }>) {
    const got = await s;
    closers.push(() => closeServer(got.server));
    return got;
  }

  it('gives REGISTRY_NETWORK after bounded retries when nothing listens', async () => {
    const port = await freePort();
    const client = track(new RegistryClient({ plainHttp: true, retries: 2, retryDelayMs: 20 }));
    const started = Date.now();
    await assert.rejects(client.getManifest(parseReference(`127.0.0.1:${port}/foo:bar`)), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NETWORK'), String(err));
      assert.ok(err.message.startsWith(`registry 127.0.0.1:${port}/foo:bar: GET manifest failed: connection to http://127.0.0.1:${port} failed after 3 attempts`), err.message);
      assert.match(err.message, /ECONNREFUSED/);
      assert.equal(err.details.attempts, 3);
      return true;
    });
    assert.ok(Date.now() - started < 5000);
  });

  it('retries reads on 503 and 429, but not uploads', async () => {
    let hits = 0;
    const body = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}');
    const { host } = await track$(
      serve((req, res) => {
        hits++;
        if (req.method === 'GET' && hits <= 2) {
          res.writeHead(hits === 1 ? 503 : 429, { 'retry-after': '0' });
          res.end();
          return;
        }
        if (req.method === 'GET') {
          res.writeHead(200, { 'content-type': OCI_MANIFEST });
          res.end(body);
          return;
        }
        res.writeHead(503);
        res.end();
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [host], retries: 3, retryDelayMs: 5 }));
    const got = await client.getManifest(parseReference(`${host}/r:t`));
    assert.equal(got.digest, computeDigest(body));
    assert.equal(hits, 3);
    hits = 100;
    await assert.rejects(client.putManifest(parseReference(`${host}/r:t`), OCI_MANIFEST, body), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_STATUS'), String(err));
      assert.match(err.message, /PUT manifest failed: 503 Service Unavailable/);
      return true;
    });
    assert.equal(hits, 101);
  });

  it('times out a hanging server with REGISTRY_NETWORK', async () => {
    const { host } = await track$(serve(() => undefined));
    const client = track(new RegistryClient({ plainHttp: [host], retries: 1, retryDelayMs: 5, timeoutMs: 300 }));
    const started = Date.now();
    await assert.rejects(client.getManifest(parseReference(`${host}/r:t`)), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_NETWORK'), String(err));
      assert.match(err.message, /timed out after 300 ms/);
      return true;
    });
    assert.ok(Date.now() - started < 3000);
  });

  it('follows a blob redirect to storage without sending credentials there', async () => {
    const data = randomBytes(5000);
    const blobDigest = computeDigest(data);
    const storageAuth: Array<string | undefined> = [];
    const storage = await track$(
      serve((req, res) => {
        storageAuth.push(req.headers.authorization);
        const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
        if (m !== null) {
          const start = Number(m[1]);
          const end = Number(m[2]);
          res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${data.length}` });
          res.end(data.subarray(start, end + 1));
        } else {
          res.writeHead(200);
          res.end(data);
        }
      }),
    );
    const front = await track$(
      serve((req, res) => {
        if (req.headers.authorization === undefined) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' });
          res.end();
          return;
        }
        res.writeHead(307, { location: `${storage.origin}/bucket/blob?X-Signature=abc` });
        res.end();
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [front.host], credentials: { username: 'u', password: 'p' } }));
    const ref = parseReference(`${front.host}/r:t`);
    assert.deepEqual(await readAll(await client.getBlob(ref, blobDigest)), data);
    assert.deepEqual(await client.getBlobRange(ref, blobDigest, 100, 199), data.subarray(100, 200));
    assert.deepEqual(storageAuth, [undefined, undefined]);
  });

  it('slices a 200 answer from a server that ignores Range', async () => {
    const data = randomBytes(300000);
    const { host } = await track$(
      serve((_req, res) => {
        res.writeHead(200, { 'content-length': String(data.length) });
        res.end(data);
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [host] }));
    const ref = parseReference(`${host}/r:t`);
    assert.deepEqual(await client.getBlobRange(ref, digest, 250000, 250999), data.subarray(250000, 251000));
    assert.deepEqual(await client.getBlobRange(ref, digest, 0, 9), data.subarray(0, 10));
    await assert.rejects(client.getBlobRange(ref, digest, 299990, 300009), (err: unknown) =>
      isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_STATUS') && /received 10 bytes, expected 20/.test(err.message),
    );
    // A suffix range answered with the whole body: the tail is its end, the size its length.
    const tail = await client.getBlobTail(ref, digest, 1000);
    assert.equal(tail.blobSize, data.length);
    assert.deepEqual(tail.data, data.subarray(data.length - 1000));
  });

  it('refuses a manifest whose media type is not accepted', async () => {
    const { host } = await track$(
      serve((_req, res) => {
        res.writeHead(200, { 'content-type': DOCKER_MANIFEST_V1_SIGNED });
        res.end('{"schemaVersion":1}');
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [host] }));
    await assert.rejects(client.getManifest(parseReference(`${host}/old/image:v1`)), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_MANIFEST_UNSUPPORTED'), String(err));
      assert.ok(err.message.startsWith(`registry ${host}/old/image:v1: GET manifest failed: registry served media type "${DOCKER_MANIFEST_V1_SIGNED}"`));
      return true;
    });
  });

  it('takes the media type from the body when the server sends application/json', async () => {
    const { host } = await track$(
      serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: {}, layers: [] }));
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [host] }));
    assert.equal((await client.getManifest(parseReference(`${host}/r:t`))).mediaType, DOCKER_MANIFEST);
  });

  it('rejects a manifest that does not match the digest it was fetched by', async () => {
    const { host } = await track$(
      serve((_req, res) => {
        res.writeHead(200, { 'content-type': OCI_MANIFEST });
        res.end('{"schemaVersion":2}');
      }),
    );
    const client = track(new RegistryClient({ plainHttp: [host] }));
    const ref = { registry: host, repository: 'r', digest: computeDigest(Buffer.from('other')) };
    await assert.rejects(client.getManifest(ref), (err: unknown) => {
      assert.ok(isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH'), String(err));
      assert.ok(err.message.includes(formatReference(ref)));
      return true;
    });
  });
});
