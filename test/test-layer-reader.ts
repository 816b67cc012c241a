import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { chunkDigestOf, type ChunkCache } from '../src/cache/chunk-cache';
import { DiskChunkCache } from '../src/cache/disk-chunk-cache';
import { MemoryChunkCache } from '../src/cache/memory-chunk-cache';
import { convertLayerFile } from '../src/convert/convert-layer';
import { isLazypullError, type LazypullError } from '../src/errors';
import { readBlobToc, type BlobReader } from '../src/format/toc-reader';
import { LayerIndex, type Inode } from '../src/fs/layer-index';
import { LayerReader, type LayerReaderOptions } from '../src/fs/layer-reader';
import { RegistryClient } from '../src/registry/client';
import { parseReference, type ImageReference } from '../src/registry/reference';
import { RemoteBlob } from '../src/registry/remote-blob';
import { FileBlob } from '../src/util/file-blob';
import { FaultyBlob, type BlobFault } from './support/faulty-blob';
import { startFaultyProxy, type FaultyProxy, type ProxyFault } from './support/faulty-proxy';
import { pseudoRandomBytes } from './support/oci-image';
import { skipWithoutRegistry, startRegistry, type RegistryFixture } from './support/registry-fixture';

const CHUNK = 64 * 1024;
const MEDIUM = pseudoRandomBytes(100_000, 2);
const FILES: Record<string, Buffer> = {
  'empty': Buffer.alloc(0),
  'small.txt': Buffer.from('hello from lazypull\n'),
  'data/medium.bin': MEDIUM,
  // Same bytes as medium.bin: same chunk digests, fetched and stored once.
  'data/dup.bin': MEDIUM,
  'data/exact.bin': pseudoRandomBytes(2 * CHUNK, 3),
  'data/big.bin': pseudoRandomBytes(16 * CHUNK + 17, 4),
  'data/text.txt': Buffer.from('lazy '.repeat(70_000)),
  'app/start1': pseudoRandomBytes(50_000, 5),
  'app/start2': pseudoRandomBytes(200_000, 6),
};
const HARDLINKS: Record<string, string> = { 'data/big-link': 'data/big.bin' };
const PRIORITIZED = ['app/start1', 'app/start2'];
const TOTAL_BYTES = Object.values(FILES).reduce((n, b) => n + b.length, 0);

function expected(path: string): Buffer {
  return FILES[HARDLINKS[path] ?? path]!;
}
const ALL_PATHS = [...Object.keys(FILES), ...Object.keys(HARDLINKS)];

async function writeTar(path: string): Promise<void> {
  const packer = pack();
  const parts: Buffer[] = [];
  const done = (async () => {
    for await (const c of packer) parts.push(c as Buffer);
  })();
  packer.entry({ name: 'app/', type: 'directory', mode: 0o755 });
  packer.entry({ name: 'data/', type: 'directory', mode: 0o755 });
  for (const [name, content] of Object.entries(FILES)) packer.entry({ name, type: 'file', mode: 0o644 }, content);
  for (const [name, target] of Object.entries(HARDLINKS)) packer.entry({ name, type: 'link', linkname: target, mode: 0o644 });
  packer.finalize();
  await done;
  await fs.writeFile(path, Buffer.concat(parts));
}

/** xorshift, so random reads are the same on every run. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

interface Opened {
  reader: LayerReader;
  blob: FaultyBlob;
  index: LayerIndex;
  events: Array<Record<string, unknown>>;
  inode(path: string): Inode;
}

const LABEL = 'sha256:' + 'ab'.repeat(32);

async function openLayer(base: BlobReader, cache: ChunkCache, opts: Partial<LayerReaderOptions> = {}): Promise<Opened> {
  const blob = new FaultyBlob(base);
  const { toc, tocOffset } = await readBlobToc(base, LABEL);
  const index = new LayerIndex(toc, { tocOffset, label: LABEL });
  const events: Array<Record<string, unknown>> = [];
  const reader = new LayerReader(index, blob, { label: LABEL, cache, log: (e) => events.push(e), ...opts });
  return {
    reader,
    blob,
    index,
    events,
    inode: (path) => {
      const node = index.lookup(path);
      assert.ok(node, path);
      return node;
    },
  };
}

async function readWhole(o: Opened, path: string): Promise<Buffer> {
  return o.reader.read(o.inode(path), 0, o.inode(path).size + 100, `/${path}`);
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function assertRejectsWithin(promise: Promise<unknown>, ms: number, codes: string[]): Promise<LazypullError> {
  const started = Date.now();
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  const elapsed = Date.now() - started;
  assert.ok(caught !== undefined, 'the read must fail, not return bytes');
  assert.ok(isLazypullError(caught), `a LazypullError, got ${String(caught)}`);
  assert.ok(codes.includes(caught.code), `code ${caught.code}: ${caught.message}`);
  assert.ok(elapsed <= ms, `failed after ${elapsed} ms, limit ${ms}`);
  return caught;
}

describe('LayerReader', function () {
  let work: string;
  let plainPath: string;
  let prioPath: string;
  let plain: FileBlob;
  let prio: FileBlob;

  before(async () => {
    work = await fs.mkdtemp(join(tmpdir(), 'lzp-reader-'));
    const tar = join(work, 'layer.tar');
    await writeTar(tar);
    plainPath = join(work, 'plain.tar.gz');
    prioPath = join(work, 'prio.tar.gz');
    await convertLayerFile(tar, plainPath, { chunkSize: CHUNK, level: 6 });
    await convertLayerFile(tar, prioPath, { chunkSize: CHUNK, level: 6, prioritize: PRIORITIZED });
    plain = await FileBlob.open(plainPath);
    prio = await FileBlob.open(prioPath);
  });
  after(async () => {
    await plain?.close();
    await prio?.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  describe('over a local blob', () => {
    it('finds the TOC from a prefetched tail: no further read when the tail holds it, one when it does not', async () => {
      const whole = await readBlobToc(plain, LABEL);
      const counting = (): BlobReader & { reads: number } => ({
        size: plain.size,
        reads: 0,
        readAt(offset, length) {
          this.reads++;
          return plain.readAt(offset, length);
        },
      });
      for (const tailLength of [plain.size - whole.tocOffset, plain.size, 51, plain.size - whole.tocOffset - 1]) {
        const blob = counting();
        const tail = await plain.readAt(plain.size - tailLength, tailLength);
        const got = await readBlobToc(blob, LABEL, undefined, tail);
        assert.equal(got.tocDigest, whole.tocDigest, `${tailLength}-byte tail`);
        assert.equal(got.tocOffset, whole.tocOffset);
        assert.equal(blob.reads, tailLength >= plain.size - whole.tocOffset ? 0 : 1, `reads after a ${tailLength}-byte tail`);
      }
    });

    it('reads every file exactly, whole and at random offsets and lengths', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20));
      assert.ok(o.inode('data/big.bin').chunks.length >= 17);
      assert.equal(o.inode('data/big-link'), o.inode('data/big.bin'), 'hardlinks share an inode');
      for (const path of ALL_PATHS) assert.deepEqual(await readWhole(o, path), expected(path), path);

      // Fresh cache: random ranges also fetch, across chunk boundaries and past the end.
      const fresh = await openLayer(plain, new MemoryChunkCache(64 << 20));
      const random = prng(7);
      const reads: Array<Promise<void>> = [];
      for (let i = 0; i < 300; i++) {
        const path = ALL_PATHS[Math.floor(random() * ALL_PATHS.length)]!;
        const want = expected(path);
        const offset = Math.floor(random() * (want.length + 10));
        const length = random() < 0.3 ? Math.floor(random() * 3 * CHUNK) : Math.floor(random() * 5000);
        reads.push(
          fresh.reader.read(fresh.inode(path), offset, length, path).then((got) => {
            assert.deepEqual(got, want.subarray(offset, offset + length), `${path} ${offset}+${length}`);
          }),
        );
      }
      // Exactly across a chunk boundary, and around it.
      const big = expected('data/big.bin');
      for (const offset of [CHUNK - 1, CHUNK, 2 * CHUNK - 7, 16 * CHUNK, 16 * CHUNK + 16]) {
        assert.deepEqual(await fresh.reader.read(fresh.inode('data/big.bin'), offset, 20), big.subarray(offset, offset + 20));
      }
      await Promise.all(reads);
      assert.deepEqual(await fresh.reader.read(fresh.inode('empty'), 0, 4096), Buffer.alloc(0));
      assert.deepEqual(await fresh.reader.read(fresh.inode('small.txt'), 1000, 10), Buffer.alloc(0));
      await assert.rejects(fresh.reader.read(fresh.inode('data'), 0, 1), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'));
      assert.equal(fresh.reader.stats().verifyFailures, 0);
    });

    it('coalesces adjacent missing chunks into one request, bounded by maxRequestBytes', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20));
      const big = o.inode('data/big.bin');
      assert.deepEqual(await readWhole(o, 'data/big.bin'), expected('data/big.bin'));
      assert.equal(o.blob.reads.length, 1, 'all 17 chunks in one range request');
      assert.equal(o.reader.stats().requests, 1);
      assert.equal(o.reader.stats().fetchedBytes, big.chunks.at(-1)!.blobEnd - big.chunks[0]!.blobOffset);
      await readWhole(o, 'data/big.bin');
      await readWhole(o, 'data/big-link');
      assert.equal(o.blob.reads.length, 1, 'a second read is served by the cache');

      const capped = await openLayer(plain, new MemoryChunkCache(64 << 20), { maxRequestBytes: 150_000 });
      assert.deepEqual(await readWhole(capped, 'data/big.bin'), expected('data/big.bin'));
      const n = capped.blob.reads.length;
      assert.ok(n > 1 && n < big.chunks.length, `${n} requests`);
      assert.ok(capped.blob.reads.every((r) => r.length <= 150_000));

      // A read across one boundary: two chunks, one request.
      const cross = await openLayer(plain, new MemoryChunkCache(64 << 20));
      await cross.reader.read(big, CHUNK - 10, 20);
      assert.equal(cross.blob.reads.length, 1);
      assert.equal(cross.blob.reads[0]!.offset, big.chunks[0]!.blobOffset);
      assert.equal(cross.blob.reads[0]!.length, big.chunks[1]!.blobEnd - big.chunks[0]!.blobOffset);
    });

    it('shares one fetch between concurrent reads, and fetches a chunk shared by files or layers once', async () => {
      const cache = new MemoryChunkCache(64 << 20);
      const a = await openLayer(plain, cache);
      const b = await openLayer(prio, cache);
      const reads = [];
      for (let i = 0; i < 10; i++) reads.push(a.reader.read(a.inode('data/big.bin'), i * 1000, 300_000));
      // The same chunks in another layer (same content, same chunk size) join the fetch in flight.
      reads.push(b.reader.read(b.inode('data/big.bin'), 0, 300_000));
      const results = await Promise.all(reads);
      results.forEach((got, i) => {
        const offset = i < 10 ? i * 1000 : 0;
        assert.deepEqual(got, expected('data/big.bin').subarray(offset, offset + 300_000));
      });
      assert.equal(a.blob.reads.length + b.blob.reads.length, 1);

      assert.deepEqual(await readWhole(a, 'data/medium.bin'), MEDIUM);
      const before = a.blob.reads.length;
      assert.ok(before > 1);
      assert.deepEqual(await readWhole(a, 'data/dup.bin'), MEDIUM);
      assert.equal(a.blob.reads.length, before, 'identical file: no request');
      for (const path of ALL_PATHS) await readWhole(a, path);
      for (const path of ALL_PATHS) assert.deepEqual(await readWhole(b, path), expected(path));
      assert.equal(b.blob.reads.length, 0, 'the other layer needs no request for identical chunks');
    });

    it('reports total and local bytes, cache hits and misses, and the latency of every range read', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20));
      const { fetchSeconds: none, ...counters } = o.reader.stats();
      assert.deepEqual(counters, { totalBytes: TOTAL_BYTES, localBytes: 0, fetchedBytes: 0, requests: 0, verifyFailures: 0, cacheHits: 0, cacheMisses: 0 });
      assert.equal(none.count, 0);
      await readWhole(o, 'small.txt');
      assert.equal(o.reader.stats().localBytes, FILES['small.txt']!.length);
      assert.deepEqual([o.reader.stats().cacheHits, o.reader.stats().cacheMisses], [0, o.inode('small.txt').chunks.length]);
      await readWhole(o, 'small.txt');
      assert.deepEqual([o.reader.stats().cacheHits, o.reader.stats().cacheMisses], [o.inode('small.txt').chunks.length, o.inode('small.txt').chunks.length]);
      const latency = o.reader.stats().fetchSeconds;
      assert.equal(latency.count, o.reader.stats().requests, 'one observation per range read');
      assert.equal(latency.counts.reduce((a, b) => a + b, 0), latency.count);
      assert.ok(latency.sum > 0);
      await readWhole(o, 'data/medium.bin');
      // dup.bin's chunks are the same digests: local too.
      assert.equal(o.reader.stats().localBytes, FILES['small.txt']!.length + 2 * MEDIUM.length);
      for (const path of ALL_PATHS) await readWhole(o, path);
      const stats = o.reader.stats();
      assert.equal(stats.localBytes, stats.totalBytes);
      assert.ok(stats.fetchedBytes > 0 && stats.fetchedBytes < plain.size);
    });

    it('prefetches the prioritized files in one request, then reads them with none', async () => {
      const o = await openLayer(prio, new MemoryChunkCache(64 << 20));
      assert.ok(o.index.prefetchEnd !== undefined);
      await o.reader.prefetch();
      assert.equal(o.blob.reads.length, 1);
      const r = o.blob.reads[0]!;
      assert.ok(r.offset + r.length <= o.index.prefetchEnd!, 'nothing past the landmark');
      for (const path of PRIORITIZED) assert.deepEqual(await readWhole(o, path), expected(path));
      assert.equal(o.blob.reads.length, 1, 'prioritized files are local');
      assert.equal(o.reader.stats().localBytes, PRIORITIZED.reduce((n, p) => n + expected(p).length, 0));
      await o.reader.prefetch();
      assert.equal(o.blob.reads.length, 1, 'a second prefetch finds everything cached');
      assert.ok(o.events.some((e) => e.event === 'prefetch_done'));
      await readWhole(o, 'data/big.bin');
      assert.equal(o.blob.reads.length, 2);

      const none = await openLayer(plain, new MemoryChunkCache(64 << 20));
      assert.equal(none.index.prefetchEnd, undefined);
      await none.reader.prefetch();
      assert.equal(none.blob.reads.length, 0, 'no landmark, no prefetch');
    });

    it("prefetches the runtime's /etc/passwd and /etc/group alongside, and says when the start-up files are requested", async () => {
      // A layer whose /etc files lie after the landmark (not prioritized), as in most images.
      const packer = pack();
      const parts: Buffer[] = [];
      const done = (async () => {
        for await (const c of packer) parts.push(c as Buffer);
      })();
      const etc = { 'etc/group': Buffer.from('root:x:0:\n'), 'etc/passwd': Buffer.from('root:x:0:0:root:/root:/bin/sh\n') };
      packer.entry({ name: 'app/start', type: 'file', mode: 0o755 }, FILES['app/start1']);
      packer.entry({ name: 'data/big.bin', type: 'file', mode: 0o644 }, FILES['data/big.bin']);
      for (const [name, content] of Object.entries(etc)) packer.entry({ name, type: 'file', mode: 0o644 }, content);
      packer.finalize();
      await done;
      const tar = join(work, 'etc-layer.tar');
      const gz = join(work, 'etc-layer.tar.gz');
      await fs.writeFile(tar, Buffer.concat(parts));
      await convertLayerFile(tar, gz, { chunkSize: CHUNK, level: 6, prioritize: ['app/start'] });
      const blob = await FileBlob.open(gz);
      try {
        const o = await openLayer(blob, new MemoryChunkCache(64 << 20));
        let requested = false;
        void o.reader.prefetching.then(() => (requested = true));
        await new Promise((r) => setImmediate(r));
        assert.equal(requested, false, 'pending before a prefetch');
        await o.reader.prefetch();
        assert.equal(requested, true);
        assert.equal(o.blob.reads.length, 2, 'the landmark range, and the two adjacent /etc files in one more request');
        const [range, runtime] = [...o.blob.reads].sort((a, b) => a.offset - b.offset);
        assert.ok(range!.offset + range!.length <= o.index.prefetchEnd!);
        assert.ok(runtime!.offset >= o.index.prefetchEnd!);
        for (const [name, content] of Object.entries(etc)) assert.deepEqual(await o.reader.read(o.inode(name), 0, 100, `/${name}`), content);
        assert.deepEqual(await o.reader.read(o.inode('app/start'), 0, 1 << 20, '/app/start'), FILES['app/start1']);
        assert.equal(o.blob.reads.length, 2, 'all of them local');
        assert.equal(o.blob.reads.some((r) => r.offset + r.length > o.inode('data/big.bin').chunks[0]!.blobOffset && r.offset < o.inode('data/big.bin').chunks.at(-1)!.blobEnd), false, 'nothing else');
      } finally {
        await blob.close();
      }
    });

    it('fetches the rest of the layer in the background until it is all local', async () => {
      const o = await openLayer(prio, new MemoryChunkCache(64 << 20), { backgroundBatchBytes: 256 * 1024, backgroundQuietMs: 20, backgroundStartDelayMs: 0 });
      await o.reader.prefetch();
      o.reader.startBackgroundFetch();
      o.reader.startBackgroundFetch();
      await waitFor(() => o.reader.backgroundFetchDone, 10_000, 'background fetch');
      const stats = o.reader.stats();
      assert.equal(stats.localBytes, stats.totalBytes);
      assert.ok(o.blob.reads.length > 2, `${o.blob.reads.length} requests`);
      assert.ok(o.blob.reads.slice(1).every((r) => r.length <= 256 * 1024), 'moderate batches');
      // Requests walk the blob forward, never fetching a byte range twice.
      const ranges = o.blob.reads.map((r) => [r.offset, r.offset + r.length] as const).sort((x, y) => x[0] - y[0]);
      for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]![0] >= ranges[i - 1]![1], 'no overlapping requests');
      const requests = o.blob.reads.length;
      for (const path of ALL_PATHS) assert.deepEqual(await readWhole(o, path), expected(path));
      assert.equal(o.blob.reads.length, requests, 'everything served locally');
      assert.equal(o.events.filter((e) => e.event === 'background_fetch_done').length, 1);
      await o.reader.stopBackgroundFetch();
    });

    it('starts the background fetch only after its start delay, and a stop during the delay ends it', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20), { backgroundQuietMs: 0, backgroundStartDelayMs: 400 });
      const before = o.blob.reads.length;
      const startedAt = Date.now();
      o.reader.startBackgroundFetch();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(o.blob.reads.length, before, 'no request during the delay');
      await waitFor(() => o.reader.backgroundFetchDone, 10_000, 'background fetch');
      assert.ok(Date.now() - startedAt >= 400, 'done after the delay');
      assert.equal(o.reader.stats().localBytes, TOTAL_BYTES);
      await o.reader.stopBackgroundFetch();

      const again = await openLayer(plain, new MemoryChunkCache(64 << 20), { backgroundQuietMs: 0, backgroundStartDelayMs: 5000 });
      const idle = again.blob.reads.length;
      again.reader.startBackgroundFetch();
      const stopping = Date.now();
      await again.reader.stopBackgroundFetch();
      assert.ok(Date.now() - stopping < 1000, 'the stop does not wait out the delay');
      assert.equal(again.blob.reads.length, idle);
      assert.equal(again.reader.backgroundFetchDone, false);
    });

    it('pauses the background fetch while foreground reads are in flight, and stops cleanly', async () => {
      const dir = await fs.mkdtemp(join(work, 'disk-'));
      const cache = await DiskChunkCache.open(dir, 64 << 20);
      const o = await openLayer(plain, cache, { backgroundBatchBytes: CHUNK * 2, backgroundQuietMs: 100, backgroundStartDelayMs: 0 });
      o.blob.delayMs = 5;
      await readWhole(o, 'data/medium.bin');
      const warm = o.blob.reads.length;
      // Foreground load: back-to-back reads (served from the disk cache, so real I/O turns the event loop).
      let loading = true;
      let loadReads = 0;
      const load = (async () => {
        while (loading) {
          assert.deepEqual(await readWhole(o, 'data/medium.bin'), MEDIUM);
          loadReads++;
        }
      })();
      await new Promise((r) => setTimeout(r, 20));
      o.reader.startBackgroundFetch();
      await new Promise((r) => setTimeout(r, 600));
      loading = false;
      await load;
      assert.ok(loadReads > 20, `${loadReads} foreground reads`);
      assert.equal(o.blob.reads.length, warm, 'no background request while the foreground was busy');
      await waitFor(() => o.blob.reads.length > warm + 1, 3000, 'background to resume');
      await o.reader.stopBackgroundFetch();
      const afterStop = o.blob.reads.length;
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(o.blob.reads.length, afterStop, 'stopped');
      assert.ok(o.reader.stats().localBytes < o.reader.stats().totalBytes);
      // It can be started again and completes.
      o.reader.startBackgroundFetch();
      await waitFor(() => o.reader.backgroundFetchDone, 10_000, 'background fetch');
      assert.equal(o.reader.stats().localBytes, TOTAL_BYTES);
      await o.reader.stopBackgroundFetch();
    });
  });

  describe('with faults in the blob reader', () => {
    const TIMEOUT = 800;
    const SLACK = 400;

    it('never returns a corrupted chunk: flipped bytes fail with a digest mismatch, logged, nothing cached', async () => {
      const cache = new MemoryChunkCache(64 << 20);
      const o = await openLayer(plain, cache, { readTimeoutMs: TIMEOUT });
      const big = o.inode('data/big.bin');
      o.blob.setFault({ kind: 'flip' });
      const err = await assertRejectsWithin(o.reader.read(big, 0, 100, '/data/big.bin'), TIMEOUT, ['LAZYPULL_ERR_DIGEST_MISMATCH']);
      assert.equal(err.details.layer, LABEL);
      assert.equal(err.details.file, '/data/big.bin');
      const logged = o.events.filter((e) => e.event === 'chunk_digest_mismatch');
      assert.equal(logged.length, 2, 'tried twice');
      assert.deepEqual(
        { layer: logged[0]!.layer, file: logged[0]!.file, offset: logged[0]!.offset, expected: logged[0]!.expected },
        { layer: LABEL, file: '/data/big.bin', offset: 0, expected: big.chunks[0]!.digest },
      );
      assert.ok(o.events.some((e) => e.event === 'read_failed' && e.code === 'LAZYPULL_ERR_DIGEST_MISMATCH'));
      assert.equal(o.reader.stats().verifyFailures, 2);
      assert.equal(cache.has(big.chunks[0]!.digest), false);
      assert.equal(cache.usage().entries, 0);
      o.blob.setFault({ kind: 'none' });
      assert.deepEqual(await readWhole(o, 'data/big.bin'), expected('data/big.bin'));
    });

    it('refuses well-formed gzip of the wrong bytes, reporting the actual digest', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20), { readTimeoutMs: TIMEOUT });
      const fake = Buffer.from('HELLO FROM LAZYPULL\n');
      const fakeGz = gzipSync(fake);
      o.blob.setFault({ kind: 'replace', replace: (_offset, data) => Buffer.concat([fakeGz, data]).subarray(0, data.length) });
      await assertRejectsWithin(readWhole(o, 'small.txt'), TIMEOUT, ['LAZYPULL_ERR_DIGEST_MISMATCH']);
      const logged = o.events.find((e) => e.event === 'chunk_digest_mismatch')!;
      assert.equal(logged.actual, chunkDigestOf(fake));
      assert.equal(logged.expected, chunkDigestOf(FILES['small.txt']!));
      assert.equal(logged.file, '/small.txt');
    });

    it('recovers from a transient corruption, stall or error within the time budget', async () => {
      const o = await openLayer(plain, new MemoryChunkCache(64 << 20), { readTimeoutMs: 3000 });
      o.blob.setFault({ kind: 'flip' }, 1);
      assert.deepEqual(await readWhole(o, 'data/medium.bin'), MEDIUM);
      // Every chunk in the corrupted response failed once, then was refetched alone.
      assert.equal(o.reader.stats().verifyFailures, o.inode('data/medium.bin').chunks.length);
      o.blob.setFault({ kind: 'throw' }, 2);
      assert.deepEqual(await readWhole(o, 'data/exact.bin'), expected('data/exact.bin'));
      o.blob.setFault({ kind: 'short' }, 1);
      assert.deepEqual(await readWhole(o, 'data/text.txt'), expected('data/text.txt'));
      const started = Date.now();
      o.blob.setFault({ kind: 'stall' }, 1);
      assert.deepEqual(await readWhole(o, 'app/start2'), expected('app/start2'));
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 900 && elapsed < 2500, `a stalled attempt is abandoned and retried (${elapsed} ms)`);
    });

    for (const [kind, fault] of [
      ['errors', { kind: 'throw' }],
      ['stalls', { kind: 'stall' }],
      ['short reads', { kind: 'short' }],
    ] as Array<[string, BlobFault]>) {
      it(`fails reads with READ_FAILED within readTimeoutMs when every request ${kind === 'stalls' ? 'stalls' : `gives ${kind}`}`, async () => {
        const o = await openLayer(plain, new MemoryChunkCache(64 << 20), { readTimeoutMs: TIMEOUT });
        o.blob.setFault(fault);
        const reads = [readWhole(o, 'data/big.bin'), o.reader.read(o.inode('small.txt'), 0, 5, '/small.txt')];
        const errors = await Promise.all(reads.map((r) => assertRejectsWithin(r, TIMEOUT + SLACK, ['LAZYPULL_ERR_READ_FAILED'])));
        for (const err of errors) assert.equal(err.details.layer, LABEL);
        assert.ok(o.events.some((e) => e.event === 'read_failed' && e.file === '/small.txt'));
        o.blob.setFault({ kind: 'none' });
        assert.deepEqual(await readWhole(o, 'data/big.bin'), expected('data/big.bin'));
        assert.deepEqual(await readWhole(o, 'small.txt'), FILES['small.txt']);
      });
    }

    it('under random faults, every read returns the original bytes or fails; nothing bad is cached', async () => {
      const random = prng(11);
      const faults: BlobFault[] = [{ kind: 'flip' }, { kind: 'throw' }, { kind: 'short' }, { kind: 'stall' }];
      let ok = 0;
      let failed = 0;
      const caches: MemoryChunkCache[] = [];
      const reads: Array<Promise<void>> = [];
      for (let i = 0; i < 40; i++) {
        const cache = new MemoryChunkCache(64 << 20);
        caches.push(cache);
        const o = await openLayer(plain, cache, { readTimeoutMs: 500, maxRequestBytes: 100_000 });
        o.blob.setFault(() => {
          const x = random();
          return x < 0.55 ? { kind: 'none' } : x < 0.58 ? faults[3]! : faults[Math.floor(random() * 3)]!;
        });
        const path = ALL_PATHS[Math.floor(random() * ALL_PATHS.length)]!;
        const want = expected(path);
        const offset = Math.floor(random() * want.length);
        const length = Math.floor(random() * 200_000);
        reads.push(
          o.reader.read(o.inode(path), offset, length, path).then(
            (got) => {
              assert.deepEqual(got, want.subarray(offset, offset + length), `${path} ${offset}+${length}`);
              ok++;
            },
            (err: unknown) => {
              assert.ok(isLazypullError(err, 'LAZYPULL_ERR_READ_FAILED') || isLazypullError(err, 'LAZYPULL_ERR_DIGEST_MISMATCH'), String(err));
              failed++;
            },
          ),
        );
      }
      await Promise.all(reads);
      assert.ok(ok > 0 && failed > 0, `${ok} ok, ${failed} failed`);
      // Whatever made it into a cache is what the TOC says.
      const o = await openLayer(plain, new MemoryChunkCache(1));
      for (const cache of caches) {
        for (const inode of o.index.inodes.values()) {
          for (const c of inode.chunks) {
            const data = await cache.get(c.digest);
            if (data !== undefined) assert.equal(`sha256:${createHash('sha256').update(data).digest('hex')}`, c.digest);
          }
        }
      }
    });
  });

  describe('against a real registry', function () {
    let registry: RegistryFixture | undefined;
    let client: RegistryClient;
    let digest: string;
    let size: number;

    before(async function () {
      skipWithoutRegistry(this);
      registry = await startRegistry();
      client = new RegistryClient({ plainHttp: [registry.host], retries: 1, retryDelayMs: 10 });
      const data = await fs.readFile(plainPath);
      digest = chunkDigestOf(data);
      size = data.length;
      const result = await client.pushBlob(parseReference(`${registry.host}/lazy/layer:v1`), digest, size, () => createReadStream(plainPath));
      assert.equal(result, 'uploaded');
    });
    after(async () => {
      await client?.close();
      await registry?.stop();
    });

    it('reads exact bytes through HTTP Range GETs, and nothing twice', async () => {
      const remote = new RemoteBlob(client, parseReference(`${registry!.host}/lazy/layer:v1`), digest, size);
      const o = await openLayer(remote, new MemoryChunkCache(64 << 20));
      const afterToc = remote.requests;
      for (const path of ALL_PATHS) assert.deepEqual(await readWhole(o, path), expected(path), path);
      assert.equal(remote.requests - afterToc, o.reader.stats().requests);
      assert.ok(o.reader.stats().requests <= 8, `${o.reader.stats().requests} requests`);
      const before = remote.requests;
      for (const path of ALL_PATHS) await readWhole(o, path);
      assert.equal(remote.requests, before, 'second read from cache');
    });

    describe('through a fault-injecting proxy', () => {
      let proxy: FaultyProxy;
      let proxied: RegistryClient;
      let ref: ImageReference;
      const TIMEOUT = 1500;

      before(async function () {
        if (registry === undefined) this.skip();
        proxy = await startFaultyProxy(registry.host);
        proxied = new RegistryClient({ plainHttp: [proxy.host], retries: 1, retryDelayMs: 10, timeoutMs: 300 });
        ref = parseReference(`${proxy.host}/lazy/layer:v1`);
      });
      after(async () => {
        await proxied?.close();
        await proxy?.close();
      });

      const open = async (): Promise<Opened> => {
        proxy.setFault('none');
        return openLayer(new RemoteBlob(proxied, ref, digest, size), new MemoryChunkCache(64 << 20), { readTimeoutMs: TIMEOUT });
      };

      for (const fault of ['reset', '500', 'stall', 'truncate', 'corrupt'] as ProxyFault[]) {
        it(`fault "${fault}": reads fail within the timeout with no wrong bytes, and recover`, async () => {
          const o = await open();
          const big = o.inode('data/big.bin');
          proxy.setFault(fault);
          const code = fault === 'corrupt' ? 'LAZYPULL_ERR_DIGEST_MISMATCH' : 'LAZYPULL_ERR_READ_FAILED';
          await assertRejectsWithin(o.reader.read(big, CHUNK - 100, 3 * CHUNK, '/data/big.bin'), TIMEOUT + 500, [code]);
          // One faulty response, then a good one: the retry hides it.
          proxy.setFault(fault, 1);
          assert.deepEqual(await o.reader.read(big, CHUNK - 100, 3 * CHUNK), expected('data/big.bin').subarray(CHUNK - 100, 4 * CHUNK - 100));
          proxy.setFault('none');
          assert.deepEqual(await readWhole(o, 'data/big.bin'), expected('data/big.bin'));
          assert.deepEqual(await readWhole(o, 'data/text.txt'), expected('data/text.txt'));
        });
      }
    });
  });
});
