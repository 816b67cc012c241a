/** The inode tree built from a TOC, and the TOCs it must refuse. */
import { strict as assert } from 'node:assert';
import { parseToc, type Toc, type TocEntry } from '../src/format/toc';
import { LayerIndex, makedev, OPAQUE_XATTR, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../src/fs/layer-index';

const D = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;

function index(entries: TocEntry[], tocOffset = 100_000): LayerIndex {
  return new LayerIndex({ version: 1, entries }, { tocOffset, label: 'test-layer' });
}

describe('LayerIndex', function () {
  it('builds inodes with exact attributes, implicit parents and the root from "./"', function () {
    const idx = index([
      { name: '.no.prefetch.landmark', type: 'reg', size: 1, offset: 10, digest: D(1), chunkDigest: D(1) },
      { name: './', type: 'dir', mode: 0o755, modtime: '2024-01-02T03:04:05Z', uid: 0 },
      { name: 'usr/bin/tool', type: 'reg', size: 5, mode: 0o4755, uid: 7, gid: 8, modtime: '2023-11-14T22:13:20Z', offset: 200, digest: D(2) },
      { name: 'usr/bin/link', type: 'symlink', linkName: 'tool', mode: 0o777 },
      { name: 'dev/null', type: 'char', devMajor: 1, devMinor: 3, mode: 0o666 },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
    ]);
    assert.equal(idx.root.mtime, Date.parse('2024-01-02T03:04:05Z') / 1000);
    const tool = idx.lookup('/usr/bin/tool')!;
    assert.equal(tool.mode, S_IFREG | 0o4755);
    assert.deepEqual([tool.uid, tool.gid, tool.size, tool.mtime], [7, 8, 5, 1_700_000_000]);
    assert.deepEqual(tool.chunks, [{ fileOffset: 0, size: 5, blobOffset: 200, blobEnd: 100_000, digest: D(2) }]);
    assert.equal(idx.lookup('/usr')!.mode, S_IFDIR | 0o755, 'implicit parents are 0755 directories');
    assert.equal(idx.lookup('/usr/bin/link')!.mode & S_IFMT, S_IFLNK);
    assert.equal(idx.lookup('/dev/null')!.rdev, makedev(1, 3));
    assert.equal(idx.lookup('/tmp')!.mode, S_IFDIR | 0o1777);
    assert.equal(idx.lookup('/.no.prefetch.landmark'), undefined, 'landmarks are not part of the tree');
    assert.equal(idx.root.nlink, 2 + 3, 'root nlink counts its subdirectories');
    assert.equal(idx.dataSize, 5);
  });

  it('shares one inode between hardlinked names and counts the links', function () {
    const idx = index([
      { name: 'a', type: 'reg', size: 3, offset: 50, digest: D(3) },
      { name: 'dir/b', type: 'hardlink', linkName: 'a' },
      { name: 'c', type: 'hardlink', linkName: './a' },
    ]);
    const a = idx.lookup('a')!;
    assert.equal(idx.lookup('dir/b'), a);
    assert.equal(idx.lookup('c'), a);
    assert.equal(a.nlink, 3);
    assert.equal(idx.dataSize, 3);
  });

  it('gives every chunk the compressed range up to the next chunk-bearing member', function () {
    const idx = index([
      { name: 'big', type: 'reg', size: 10, offset: 100, chunkSize: 4, chunkDigest: D(4), digest: D(5) },
      { name: 'small', type: 'reg', size: 1, offset: 180, digest: D(6) },
      { name: 'big', type: 'chunk', offset: 130, chunkOffset: 4, chunkSize: 4, chunkDigest: D(7) },
      { name: 'big', type: 'chunk', offset: 160, chunkOffset: 8, chunkDigest: D(8) },
    ], 300);
    assert.deepEqual(idx.lookup('big')!.chunks.map((c) => [c.fileOffset, c.size, c.blobOffset, c.blobEnd]), [
      [0, 4, 100, 130], [4, 4, 130, 160], [8, 2, 160, 180],
    ]);
    assert.deepEqual(idx.lookup('small')!.chunks.map((c) => [c.blobOffset, c.blobEnd]), [[180, 300]]);
  });

  it('shows whiteouts as 0/0 character devices and marks opaque directories for overlayfs', function () {
    const idx = index([
      { name: 'etc/.wh.passwd', type: 'reg', mode: 0o644 },
      { name: 'var/', type: 'dir', mode: 0o755 },
      { name: 'var/.wh..wh..opq', type: 'reg', mode: 0o644 },
      { name: 'var/new', type: 'reg', size: 1, offset: 40, digest: D(9) },
    ]);
    const wh = idx.lookup('etc/passwd')!;
    assert.equal(wh.mode & S_IFMT, S_IFCHR);
    assert.equal(wh.rdev, 0);
    assert.equal(idx.lookup('etc/.wh.passwd'), undefined);
    const v = idx.lookup('var')!;
    assert.equal(v.xattrs.get(OPAQUE_XATTR)?.toString(), 'y');
    assert.deepEqual([...v.children!.keys()], ['new'], 'the opaque marker itself is hidden');
  });

  it('lists the prioritized paths (before .prefetch.landmark) in TOC order, without chunks or whiteouts', function () {
    const idx = index([
      { name: 'usr/', type: 'dir', mode: 0o755 },
      { name: 'usr/bin/python3', type: 'symlink', linkName: 'python3.11' },
      { name: 'usr/bin/python3.11', type: 'reg', size: 8, offset: 50, chunkSize: 4, chunkDigest: D(1), digest: D(2) },
      { name: 'usr/bin/python3.11', type: 'chunk', offset: 60, chunkOffset: 4, chunkDigest: D(3) },
      { name: 'etc/.wh.gone', type: 'reg' },
      { name: 'etc/ld.so.cache', type: 'reg', size: 1, offset: 70, digest: D(4) },
      { name: '.prefetch.landmark', type: 'reg', size: 1, offset: 80, digest: D(5) },
      { name: 'etc/passwd', type: 'reg', size: 1, offset: 90, digest: D(6) },
    ]);
    assert.deepEqual(idx.prioritized, ['/usr', '/usr/bin/python3', '/usr/bin/python3.11', '/etc/ld.so.cache']);
    assert.equal(idx.prefetchEnd, 80);
    const none = index([
      { name: '.no.prefetch.landmark', type: 'reg', size: 1, offset: 10, digest: D(1) },
      { name: 'etc/passwd', type: 'reg', size: 1, offset: 20, digest: D(2) },
    ]);
    assert.deepEqual(none.prioritized, [], 'no landmark, nothing prioritized');
  });

  it('knows whether any inode has an extended attribute (an opaque directory counts)', function () {
    const plain: TocEntry[] = [
      { name: 'etc/.wh.passwd', type: 'reg' },
      { name: 'bin/sh', type: 'reg', size: 1, offset: 40, digest: D(1) },
    ];
    assert.equal(index(plain).hasXattrs, false, 'whiteouts need no xattr');
    assert.equal(index([...plain, { name: 'bin/ping', type: 'reg', size: 1, offset: 50, digest: D(2), xattrs: { 'security.capability': Buffer.from([1]).toString('base64') } }]).hasXattrs, true);
    assert.equal(index([...plain, { name: 'var/.wh..wh..opq', type: 'reg' }]).hasXattrs, true);
  });

  it('refuses TOCs that would misrepresent the layer', function () {
    const bad: Array<[string, TocEntry[]]> = [
      ['duplicate name', [{ name: 'a', type: 'reg' }, { name: 'a', type: 'reg' }]],
      ['chunk of unknown file', [{ name: 'x', type: 'chunk', offset: 5, chunkDigest: D(1) }]],
      ['hardlink to a missing file', [{ name: 'l', type: 'hardlink', linkName: 'nowhere' }]],
      ['chunks that leave a gap', [{ name: 'f', type: 'reg', size: 10, offset: 5, chunkSize: 4, chunkDigest: D(1), digest: D(2) }]],
      ['a file used as a directory', [{ name: 'f', type: 'reg' }, { name: 'f/g', type: 'reg' }]],
      ['a root that is not a directory', [{ name: './', type: 'reg' }]],
    ];
    for (const [what, entries] of bad) {
      assert.throws(() => index(entries), (err: Error & { code?: string }) => err.code === 'LAZYPULL_ERR_TOC_INVALID', what);
    }
  });

  it('has its TOC checked first: paths outside the root, bad types, bad numbers and digests', function () {
    const toc = (entries: unknown[]): Buffer => Buffer.from(JSON.stringify({ version: 1, entries }));
    const bad: Array<[string, unknown[]]> = [
      ['.. escape', [{ name: '../etc/passwd', type: 'reg' }]],
      ['absolute', [{ name: '/etc/passwd', type: 'reg' }]],
      ['hardlink escape', [{ name: 'l', type: 'hardlink', linkName: '../../x' }]],
      ['unknown type', [{ name: 'x', type: 'socket' }]],
      ['negative size', [{ name: 'x', type: 'reg', size: -1 }]],
      ['fractional offset', [{ name: 'x', type: 'reg', offset: 1.5 }]],
      ['malformed digest', [{ name: 'x', type: 'reg', digest: 'md5:abc' }]],
    ];
    for (const [what, entries] of bad) {
      assert.throws(() => parseToc(toc(entries)), (err: Error & { code?: string }) => err.code === 'LAZYPULL_ERR_TOC_INVALID', what);
    }
    assert.throws(() => parseToc(Buffer.from('{"version":1')), /not valid JSON/);
    assert.throws(() => parseToc(toc([{ name: 'a', type: 'reg' }, { name: 'b', type: 'reg' }]), { maxBytes: 1 << 20, maxEntries: 1 }), /over the limit/);
    assert.throws(() => parseToc(toc([]), { maxBytes: 10, maxEntries: 10 }), /over the limit/);
    const ok: Toc = parseToc(toc([{ name: 'fine', type: 'reg' }]));
    assert.equal(ok.entries.length, 1);
  });
});
