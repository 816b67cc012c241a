import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkDigestOf, digestHex } from '../src/cache/chunk-cache';
import { DiskChunkCache } from '../src/cache/disk-chunk-cache';
import { MemoryChunkCache } from '../src/cache/memory-chunk-cache';
import { TieredChunkCache } from '../src/cache/tiered-chunk-cache';
import { isLazypullError } from '../src/errors';

function chunk(size: number): { digest: string; data: Buffer } {
  const data = randomBytes(size);
  return { digest: chunkDigestOf(data), data };
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath ?? (entry as unknown as { path: string }).path, entry.name));
  }
  return out.sort();
}

describe('chunk caches', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'lzp-cache-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  describe('MemoryChunkCache', () => {
    it('evicts the least recently used chunk when over its byte limit', async () => {
      const cache = new MemoryChunkCache(250);
      const [a, b, c] = [chunk(100), chunk(100), chunk(100)];
      await cache.put(a.digest, a.data);
      await cache.put(b.digest, b.data);
      assert.deepEqual(await cache.get(a.digest), a.data); // a is now more recent than b
      await cache.put(c.digest, c.data);
      assert.equal(cache.has(a.digest), true);
      assert.equal(cache.has(b.digest), false);
      assert.equal(cache.has(c.digest), true);
      assert.equal(await cache.get(b.digest), undefined);
      assert.deepEqual(cache.usage(), { bytes: 200, entries: 2 });
    });

    it('does not keep a chunk larger than the whole cache, and refuses malformed digests', async () => {
      const cache = new MemoryChunkCache(50);
      const big = chunk(51);
      await cache.put(big.digest, big.data);
      assert.equal(cache.has(big.digest), false);
      await assert.rejects(cache.put('md5:abc', Buffer.alloc(1)), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'));
      assert.throws(() => digestHex('sha256:' + 'A'.repeat(64)));
    });
  });

  describe('DiskChunkCache', () => {
    it('stores chunks content-addressed, atomically, with no temp files left', async () => {
      const cache = await DiskChunkCache.open(dir, 1 << 20);
      const items = Array.from({ length: 5 }, () => chunk(1000));
      // The same digest written concurrently is written once.
      await Promise.all([...items, items[0]!].map((i) => cache.put(i.digest, i.data)));
      const hex = digestHex(items[0]!.digest);
      assert.deepEqual(await fs.readFile(join(dir, 'sha256', hex.slice(0, 2), hex)), items[0]!.data);
      const files = await listFiles(dir);
      assert.equal(files.length, 5);
      assert.ok(files.every((f) => /sha256\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(f)), files.join('\n'));
      assert.deepEqual(cache.usage(), { bytes: 5000, entries: 5 });
      for (const i of items) {
        assert.equal(cache.has(i.digest), true);
        assert.deepEqual(await cache.get(i.digest), i.data);
      }
      assert.equal(cache.has(chunk(10).digest), false);
      assert.equal(await cache.get(chunk(10).digest), undefined);
    });

    it('keeps total size under its limit, evicting least recently used chunks', async () => {
      const cache = await DiskChunkCache.open(dir, 3500);
      const [a, b, c, d] = [chunk(1000), chunk(1000), chunk(1000), chunk(1000)];
      for (const i of [a, b, c]) await cache.put(i.digest, i.data);
      assert.ok(await cache.get(a.digest));
      await cache.put(d.digest, d.data);
      assert.equal(cache.has(b.digest), false, 'b was least recently used');
      assert.deepEqual(
        [a, c, d].map((i) => cache.has(i.digest)),
        [true, true, true],
      );
      assert.deepEqual(cache.usage(), { bytes: 3000, entries: 3 });
      assert.equal((await listFiles(dir)).length, 3);
      const huge = chunk(4000);
      await cache.put(huge.digest, huge.data);
      assert.equal(cache.has(huge.digest), false, 'a chunk larger than the cache is not stored');
    });

    it('drops a corrupt or short file instead of serving it', async () => {
      const cache = await DiskChunkCache.open(dir, 1 << 20);
      const [a, b] = [chunk(2000), chunk(2000)];
      await cache.put(a.digest, a.data);
      await cache.put(b.digest, b.data);
      const pathOf = (digest: string): string => join(dir, 'sha256', digestHex(digest).slice(0, 2), digestHex(digest));
      const flipped = Buffer.from(a.data);
      flipped[1234] = flipped[1234]! ^ 1;
      await fs.writeFile(pathOf(a.digest), flipped);
      await fs.truncate(pathOf(b.digest), 1000);
      assert.equal(await cache.get(a.digest), undefined);
      assert.equal(await cache.get(b.digest), undefined);
      assert.equal(cache.has(a.digest), false);
      assert.equal(cache.has(b.digest), false);
      assert.equal(cache.droppedCorrupt, 2);
      assert.deepEqual(await listFiles(dir), []);
      assert.deepEqual(cache.usage(), { bytes: 0, entries: 0 });
      // A good copy can be stored again.
      await cache.put(a.digest, a.data);
      assert.deepEqual(await cache.get(a.digest), a.data);
    });

    it('keeps its entries across a restart, removes leftover temp files and applies a new limit', async () => {
      const first = await DiskChunkCache.open(dir, 1 << 20);
      const items = Array.from({ length: 4 }, () => chunk(1500));
      for (const i of items) await first.put(i.digest, i.data);
      const hex = digestHex(items[0]!.digest);
      // A crash's leftover (old) and another process's write in progress (new).
      const temp = join(dir, 'sha256', hex.slice(0, 2), `.${hex}.tmp-1-deadbeef`);
      await fs.writeFile(temp, 'partial');
      const longAgo = (Date.now() - 2 * 3600_000) / 1000;
      await fs.utimes(temp, longAgo, longAgo);
      const inProgress = join(dir, 'sha256', hex.slice(0, 2), `.${hex}.tmp-2-cafebabe`);
      await fs.writeFile(inProgress, 'being written');
      await fs.writeFile(join(dir, 'sha256', 'README'), 'not a chunk');

      const second = await DiskChunkCache.open(dir, 1 << 20);
      await second.ready();
      assert.deepEqual(second.usage(), { bytes: 6000, entries: 4 });
      await fs.access(inProgress);
      for (const i of items) {
        assert.equal(second.has(i.digest), true);
        assert.deepEqual(await second.get(i.digest), i.data);
      }
      await assert.rejects(fs.access(temp));

      await fs.rm(inProgress);
      const smaller = await DiskChunkCache.open(dir, 3000);
      await smaller.ready();
      assert.deepEqual(smaller.usage(), { bytes: 3000, entries: 2 });
      assert.equal((await listFiles(dir)).filter((f) => !f.endsWith('README')).length, 2);
    });

    it('opens without waiting for the listing of what is on disk: chunks are found before it is done', async () => {
      const first = await DiskChunkCache.open(dir, 1 << 30);
      const items = Array.from({ length: 300 }, () => chunk(100));
      await Promise.all(items.map((i) => first.put(i.digest, i.data)));

      const second = await DiskChunkCache.open(dir, 1 << 30);
      assert.equal(second.usage().entries, 0, 'nothing listed yet when open returns');
      assert.equal(second.has(items[7]!.digest), true, 'found in the folder listing before the index is built');
      assert.equal(second.has(chunk(10).digest), false);
      assert.equal(second.usage().entries, 0, 'a lookup indexes nothing (no stat per chunk)');
      assert.deepEqual(await second.get(items[42]!.digest), items[42]!.data);
      const fresh = chunk(100);
      await second.put(fresh.digest, fresh.data);
      await second.ready();
      assert.deepEqual(second.usage(), { bytes: 30100, entries: 301 }, 'each chunk counted once');
    });

    it('puts the listing off by indexAfterMs, finding chunks from the folder listing meanwhile', async () => {
      const first = await DiskChunkCache.open(dir, 1 << 30);
      const items = Array.from({ length: 20 }, () => chunk(100));
      await Promise.all(items.map((i) => first.put(i.digest, i.data)));
      const opened = Date.now();
      const later = await DiskChunkCache.open(dir, 1 << 30, { indexAfterMs: 300 });
      assert.deepEqual(await later.get(items[3]!.digest), items[3]!.data);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(later.has(items[5]!.digest), true);
      assert.equal(later.usage().entries, 1, 'only the chunk read is indexed before the listing');
      await later.ready();
      assert.ok(Date.now() - opened >= 290, 'the listing waited');
      assert.deepEqual(later.usage(), { bytes: 2000, entries: 20 });
    });

    it('fails a write cleanly, indexing nothing', async () => {
      const cache = await DiskChunkCache.open(dir, 1 << 20);
      const a = chunk(100);
      const hex = digestHex(a.digest);
      // A file where the fan-out directory should be: mkdir fails.
      await fs.writeFile(join(dir, 'sha256', hex.slice(0, 2)), 'in the way');
      await assert.rejects(cache.put(a.digest, a.data));
      assert.equal(cache.has(a.digest), false);
      assert.deepEqual(cache.usage(), { bytes: 0, entries: 0 });
    });
  });

  describe('TieredChunkCache', () => {
    it('serves from memory, falls back to disk and promotes, and writes disk in the background', async () => {
      const memory = new MemoryChunkCache(2500);
      const disk = await DiskChunkCache.open(dir, 1 << 20);
      const errors: string[] = [];
      const cache = new TieredChunkCache(memory, disk, { onWriteError: (d) => errors.push(d) });
      const items = Array.from({ length: 4 }, () => chunk(1000));
      for (const i of items) await cache.put(i.digest, i.data);
      await cache.flush();
      assert.equal(disk.usage().entries, 4);
      assert.equal(memory.has(items[0]!.digest), false, 'memory keeps only what fits');
      assert.equal(cache.has(items[0]!.digest), true);
      assert.deepEqual(await cache.get(items[0]!.digest), items[0]!.data);
      assert.equal(memory.has(items[0]!.digest), true, 'promoted');
      // Damage on disk is not served (memory no longer holds items[1]).
      const hex = digestHex(items[1]!.digest);
      await fs.writeFile(join(dir, 'sha256', hex.slice(0, 2), hex), Buffer.alloc(1000));
      assert.equal(memory.has(items[1]!.digest), false);
      assert.equal(await cache.get(items[1]!.digest), undefined);
      assert.deepEqual(errors, []);
    });
  });
});
