/**
 * The lazy FUSE filesystem end to end: layers converted by lazypull and by
 * the reference converter (ctr-remote), pushed to a real docker-registry on
 * loopback, mounted by `lazypull mount` in its own process, compared path by
 * path with the original tar extracted by system tar as root; and two
 * mounted layers stacked with overlayfs.
 *
 * The mount is always read by other processes (python3, cat, tar), never by
 * this one through sync calls: see the FUSE deadlock note in shared/README.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RegistryClient } from '../src/registry/client';
import { parseReference } from '../src/registry/reference';
import { startContainerd, type Containerd } from './support/containerd-fixture';
import {
  asOverlayLower,
  compareTrees,
  dumpTree,
  execFileP,
  extractWithTar,
  lazyUnmount,
  mountsAt,
  mountsUnder,
  publishConverted,
  startMount,
  type MountProcess,
  type PublishedImage,
} from './support/mount-fixture';
import { appLayer, buildBusyboxImage, HELLO_TEXT, ociLayoutToArchive, pseudoRandomBytes, whiteoutLayer, type LayerEntry } from './support/oci-image';
import { startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireBinary, requireFuse, requireRoot } from './support/require-env';

const TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';

/** Every entry kind, and the awkward cases: multi-chunk files, long and non-ASCII names, xattrs, hardlinks, whiteouts. */
function everyKindLayer(): LayerEntry[] {
  return [
    ...appLayer(),
    ...whiteoutLayer(),
    { type: 'file', path: 'app/data/huge.bin', content: pseudoRandomBytes(9 * 1024 * 1024 + 7, 7), mode: 0o640, uid: 7, gid: 8 },
    { type: 'hardlink', path: 'app/data/big-link.bin', target: 'app/data/big.bin' },
    { type: 'hardlink', path: 'app/data/big-link2.bin', target: 'app/data/big.bin' },
    { type: 'hardlink', path: 'app/with-xattrs-link', target: 'app/with-xattrs' },
    { type: 'dir', path: 'app/xdir', mode: 0o3775, xattrs: { 'user.dir.note': 'on a directory', 'trusted.lazypull.dir': Buffer.from([9, 0, 9]) } },
    { type: 'file', path: `app/${'d'.repeat(120)}/${'f'.repeat(150)}.txt`, content: 'deep and long\n' },
    { type: 'file', path: 'app/日本語/ファイル.txt', content: 'こんにちは\n', uid: 4242, gid: 4343 },
    { type: 'symlink', path: 'app/日本語/リンク', target: 'ファイル.txt' },
    { type: 'file', path: 'app/locked', content: 'no permissions\n', mode: 0o000, uid: 12345, gid: 54321 },
    { type: 'file', path: 'app/old', content: 'from 1970\n', mtime: 1 },
    { type: 'file', path: 'app/empty-xattr', content: '', xattrs: { 'user.empty': '' } },
    { type: 'whiteout', path: 'app/gone.txt' },
    { type: 'char', path: 'app/dev/tty-copy', major: 5, minor: 0, mode: 0o620, gid: 5 },
    { type: 'block', path: 'app/dev/big-minor', major: 259, minor: 300000, mode: 0o600 },
  ];
}

function sharedArgs(work: string, name: string): string[] {
  return ['--plain-http', '--cache-dir', join(work, `cache-${name}`), '--state-dir', join(work, 'state')];
}

describe('lazypull mount: FUSE filesystem over a registry layer', function () {
  this.timeout(180_000);
  let work = '';
  let registry: RegistryFixture | undefined;
  const mounts: MountProcess[] = [];

  const mount = async (ref: string, layer: string, name: string, extra: string[] = []): Promise<MountProcess> => {
    const mp = join(work, 'mnt', name);
    const started = await startMount([ref, layer, mp, ...sharedArgs(work, name), ...extra], mp);
    mounts.push(started.mount);
    assert.ok(started.mounted, `mount ${name} failed (exit ${started.code}): ${started.mount.stderr()}`);
    return started.mount;
  };

  before(async function () {
    requireRoot(this);
    requireFuse(this);
    for (const bin of ['docker-registry', 'tar', 'python3', 'mount', 'umount']) requireBinary(this, bin);
    work = await mkdtemp(join(tmpdir(), 'lzp-fuse-'));
    registry = await startRegistry();
  });

  after(async function () {
    for (const m of mounts) await m.stop();
    if (work) {
      for (const mp of (await mountsUnder(work)).reverse()) await lazyUnmount(mp);
      const left = await mountsUnder(work);
      await registry?.stop();
      await rm(work, { recursive: true, force: true });
      assert.deepEqual(left, [], 'nothing is left mounted');
    } else {
      await registry?.stop();
    }
  });

  describe('a lazypull-converted layer with every entry kind', function () {
    let image: PublishedImage;
    let mp: MountProcess;

    before(async function () {
      image = await publishConverted(join(work, 'every'), registry!.host, 'lazy/every:v1', [{ entries: everyKindLayer() }]);
      mp = await mount(image.ref, image.layers[0], 'every', ['--no-background-fetch']);
    });

    it('is listed in /proc/mounts as a read-only fuse.lazypull mount', async function () {
      assert.deepEqual(await mountsAt(mp.mountpoint), ['fuse.lazypull']);
      const line = (await readFile('/proc/mounts', 'utf8')).split('\n').find((l) => l.split(' ')[1] === mp.mountpoint);
      assert.match(line ?? '', /\bro\b/);
      assert.match(line ?? '', /allow_other/);
      assert.match(line ?? '', /max_read=131072/);
    });

    it('fetches only what is read: one small file costs a small share of the blob', async function () {
      const { stdout } = await execFileP('cat', [join(mp.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      await new Promise((r) => setTimeout(r, 1300)); // the status file is rewritten every second
      const st = JSON.parse((await execFileP(process.execPath, [join(__dirname, '..', 'src', 'cli', 'main.js'), 'mount', '--status', mp.mountpoint, '--json', '--state-dir', join(work, 'state')])).stdout) as Record<string, number>;
      console.log(`      cat of a 20-byte file fetched ${st.fetchedBytes} of ${st.blobSize} blob bytes (${((100 * st.fetchedBytes) / st.blobSize).toFixed(3)}%) in ${st.requests} request(s)`);
      assert.ok(st.fetchedBytes > 0, 'something was fetched');
      assert.ok(st.fetchedBytes < st.blobSize * 0.01, `fetched ${st.fetchedBytes} of ${st.blobSize}`);
    });

    it('shows the same tree as the original tar extracted by system tar (lstat, bytes, links, xattrs, devices, whiteouts)', async function () {
      const extracted = join(work, 'every-extracted');
      await extractWithTar(image.originals[0], extracted);
      const expected = asOverlayLower(await dumpTree(extracted));
      const actual = await dumpTree(mp.mountpoint);
      assert.ok(Object.keys(expected).length >= 35, `compared ${Object.keys(expected).length} paths`);
      assert.deepEqual(compareTrees(expected, actual), []);
      // The facts the comparison rests on, spelled out.
      assert.equal(actual['etc/group'].type, 0o020000, 'whiteout is a char device');
      assert.deepEqual(actual['etc/group'].rdev, [0, 0]);
      assert.equal(actual['app/shared'].xattrs['trusted.overlay.opaque'], Buffer.from('y').toString('hex'));
      assert.equal(actual['app/hello.txt'].ino, actual['app/hello-link.txt'].ino, 'hardlinks share the inode number');
      assert.equal(actual['app/data/big.bin'].ino, actual['app/data/big-link2.bin'].ino);
      assert.equal(actual['app/data/big.bin'].nlink, 3);
      assert.notEqual(actual['app/hello.txt'].ino, actual['app/data/big.bin'].ino);
      assert.equal(actual['app/setuid-tool'].mode, 0o4755);
      assert.equal(actual['app/shared'].mode, 0o1777);
      assert.deepEqual(actual['app/dev/big-minor'].rdev, [259, 300000]);
    });

    it('unpacks through tar from the mount to the same tree (readdir, readlink and xattrs as tar sees them)', async function () {
      const copy = join(work, 'every-copy');
      await mkdir(copy);
      await execFileP('bash', ['-c', 'set -o pipefail; tar --xattrs --xattrs-include="*" --numeric-owner -C "$1" -cf - . | tar --xattrs --xattrs-include="*" --numeric-owner -xpf - -C "$2"', 'bash', mp.mountpoint, copy]);
      const viaTar = await dumpTree(copy);
      assert.equal(viaTar['app/hello.txt'].ino, viaTar['app/hello-link.txt'].ino, 'tar saw the hardlink');
      assert.equal(viaTar['app/data/huge.bin'].sha256, (await dumpTree(join(mp.mountpoint, 'app/data')))['huge.bin'].sha256);
    });

    it('lets other users read (allow_other) with the kernel checking modes (default_permissions)', async function () {
      const setpriv = requireBinary(this, 'setpriv');
      await execFileP('chmod', ['0755', work, join(work, 'mnt')]);
      const asNobody = (file: string): Promise<string> =>
        execFileP(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', join(mp.mountpoint, file)]).then(
          ({ stdout }) => stdout,
          (e: { stderr: string }) => `ERR ${e.stderr}`,
        );
      assert.equal(await asNobody('app/hello.txt'), HELLO_TEXT);
      assert.match(await asNobody('app/locked'), /Permission denied/);
      assert.match(await asNobody('app/empty'), /Permission denied/, 'mode 0600 owned by uid 1000');
    });

    it('refuses every modification with EROFS', async function () {
      for (const cmd of [
        `touch "$1/app/new"`,
        `echo x >> "$1/app/hello.txt"`,
        `mkdir "$1/app/newdir"`,
        `rm "$1/app/hello.txt"`,
        `chmod 600 "$1/app/hello.txt"`,
        `python3 -c 'import os,sys; os.setxattr(sys.argv[1] + "/app/hello.txt", "user.x", b"1")' "$1"`,
      ]) {
        const res = await execFileP('bash', ['-c', cmd, 'bash', mp.mountpoint]).then(() => undefined, (e: { stderr: string }) => e.stderr);
        assert.ok(res !== undefined, `${cmd} succeeded`);
        assert.match(res, /Read-only file system/, cmd);
      }
    });

    it('answers xattr size queries exactly and ERANGE for a short buffer, ENODATA for a missing name', async function () {
      const script = String.raw`
import ctypes, ctypes.util, errno, os, sys
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
p = (sys.argv[1] + '/app/with-xattrs').encode()
n = libc.lgetxattr(p, b'user.lazypull.test', None, 0)
buf = ctypes.create_string_buffer(2)
r = libc.lgetxattr(p, b'user.lazypull.test', buf, 2); e1 = ctypes.get_errno()
m = libc.lgetxattr(p, b'user.missing', None, 0); e2 = ctypes.get_errno()
ln = libc.llistxattr(p, None, 0)
small = ctypes.create_string_buffer(4)
lr = libc.llistxattr(p, small, 4); e3 = ctypes.get_errno()
print(n, r, errno.errorcode.get(e1), m, errno.errorcode.get(e2), ln, lr, errno.errorcode.get(e3))
`;
      const { stdout } = await execFileP('python3', ['-c', script, mp.mountpoint]);
      const expectedList = 'trusted.lazypull.bin\0user.lazypull.test\0'.length;
      assert.equal(stdout.trim(), `3 -1 ERANGE -1 ENODATA ${expectedList} -1 ERANGE`);
    });
  });

  describe('a layer with prioritized start-up files and no extended attributes', function () {
    let mp: MountProcess;
    let startupImage: { ref: string; layers: string[] } | undefined;
    const START = { 'app/bin/start': pseudoRandomBytes(700_000, 11), 'app/lib/libstart.so': pseudoRandomBytes(300_000, 12) };
    const ETC = { 'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n', 'etc/group': 'root:x:0:\n' };
    const status = async (): Promise<Record<string, number>> =>
      JSON.parse((await execFileP(process.execPath, [join(__dirname, '..', 'src', 'cli', 'main.js'), 'mount', '--status', mp.mountpoint, '--json', '--state-dir', join(work, 'state')])).stdout) as Record<string, number>;

    before(async function () {
      const list = join(work, 'startup-list.txt');
      await mkdir(work, { recursive: true });
      await writeFile(list, Object.keys(START).map((p) => `/${p}`).join('\n') + '\n');
      const image = await publishConverted(join(work, 'startup'), registry!.host, 'lazy/startup:v1', [
        {
          entries: [
            ...Object.entries(START).map(([path, content]): LayerEntry => ({ type: 'file', path, content, mode: 0o755 })),
            ...Object.entries(ETC).map(([path, content]): LayerEntry => ({ type: 'file', path, content })),
            { type: 'file', path: 'app/data/other.bin', content: pseudoRandomBytes(400_000, 13) },
          ],
        },
      ], {}, ['--prioritize', list]);
      startupImage = image;
      mp = await mount(image.ref, image.layers[0], 'startup', ['--no-background-fetch']);
    });

    it('logs each request the kernel sends when LAZYPULL_DEBUG=fuse, and none without', async function () {
      const dir = join(work, 'mnt', 'startup-debug');
      const started = await startMount([startupImage!.ref, startupImage!.layers[0]!, dir, ...sharedArgs(work, 'startup-debug'), '--no-background-fetch'], dir, {
        env: { LAZYPULL_DEBUG: 'fuse' },
      });
      mounts.push(started.mount);
      assert.ok(started.mounted, started.mount.stderr());
      assert.deepEqual((await readdir(join(dir, 'etc'))).sort(), ['group', 'passwd']);
      const requests = (): Array<{ op: string; path?: string }> =>
        started.mount.stderr().split('\n').filter((l) => l.includes('"fuse_op"')).map((l) => JSON.parse(l) as { op: string; path?: string });
      for (let i = 0; i < 100 && !requests().some((r) => r.op === 'readdir' && r.path === '/etc'); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(requests().some((r) => r.op === 'readdir' && r.path === '/etc'), started.mount.stderr());
      assert.ok(requests().some((r) => r.op === 'getattr' && r.path === '/etc'));
      assert.doesNotMatch(mp.stderr(), /"fuse_op"/);
    });

    it("loads the start-up files and the runtime's /etc/passwd and /etc/group into the kernel's caches", async function () {
      const deadline = Date.now() + 30_000;
      while (!/"event":"kernel_cache_warmed"/.test(mp.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const warmed = JSON.parse(mp.stderr().split('\n').find((l) => l.includes('"kernel_cache_warmed"')) ?? '{}') as Record<string, number>;
      assert.equal(warmed.files, 4, mp.stderr());
      assert.equal(warmed.failures, 0);
      // The status file is rewritten every second; the kernel's readahead of the warm-up may still be arriving on a
      // busy machine: count from when two rewrites agree.
      let before = await status();
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 1300));
        const now = await status();
        if (now.reads === before.reads) break;
        before = now;
      }
      const { stdout } = await execFileP('cat', [...Object.keys(ETC), ...Object.keys(START)].map((p) => join(mp.mountpoint, p)), { encoding: 'buffer', maxBuffer: 8 << 20 });
      assert.deepEqual(stdout, Buffer.concat([...Object.values(ETC).map((t) => Buffer.from(t)), ...Object.values(START)]));
      await new Promise((r) => setTimeout(r, 1300));
      assert.equal((await status()).reads, before.reads, 'served from the page cache: no read reached the layer server');
      await execFileP('cat', [join(mp.mountpoint, 'app/data/other.bin')], { encoding: 'buffer', maxBuffer: 8 << 20 });
      await new Promise((r) => setTimeout(r, 1300));
      assert.ok((await status()).reads > before.reads, 'a file outside the start-up set is read through the server');
    });

    it('tells the kernel once that it has no xattrs (ENOTSUP), and overlayfs copies its files up', async function () {
      const script = String.raw`
import errno, os, sys
for call in (lambda: os.getxattr(sys.argv[1] + '/app/bin/start', 'security.capability'), lambda: os.listxattr(sys.argv[1] + '/app/bin/start')):
    try:
        call(); print('ok')
    except OSError as e:
        print(errno.errorcode.get(e.errno))
`;
      const { stdout } = await execFileP('python3', ['-c', script, mp.mountpoint]);
      assert.equal(stdout, 'ENOTSUP\nENOTSUP\n');
      const rw = join(work, 'startup-rw');
      await mkdir(join(rw, 'upper'), { recursive: true });
      await mkdir(join(rw, 'work'));
      await mkdir(join(rw, 'merged'));
      await execFileP('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${mp.mountpoint},upperdir=${rw}/upper,workdir=${rw}/work`, join(rw, 'merged')]);
      try {
        await execFileP('bash', ['-c', 'echo appended >> "$1/etc/passwd" && chmod 700 "$1/app/bin/start"', 'bash', join(rw, 'merged')]);
        assert.equal(await readFile(join(rw, 'merged', 'etc/passwd'), 'utf8'), `${ETC['etc/passwd']}appended\n`);
        assert.deepEqual(await readFile(join(rw, 'upper', 'app/bin/start')), START['app/bin/start'], 'copied up whole');
        assert.equal(await readFile(join(mp.mountpoint, 'etc/passwd'), 'utf8'), ETC['etc/passwd'], 'the layer is unchanged');
      } finally {
        await lazyUnmount(join(rw, 'merged'));
      }
    });
  });

  describe('layers converted by ctr-remote (the reference converter)', function () {
    let containerd: Containerd | undefined;
    const SRC = 'docker.io/lazypull-test/mount-compat:v1';
    const DST = 'docker.io/lazypull-test/mount-compat:esgz';
    let ref = '';
    let layers: Array<{ digest: string; original: string }> = [];

    before(async function () {
      for (const bin of ['containerd', 'ctr', 'ctr-remote']) requireBinary(this, bin);
      const source = await buildBusyboxImage(join(work, 'compat-src'), 'v1', SRC);
      await ociLayoutToArchive(source.dir, join(work, 'compat-src.tar'));
      containerd = await startContainerd();
      await containerd.ctr(['image', 'import', '--no-unpack', '--base-name', 'docker.io/lazypull-test/mount-compat', join(work, 'compat-src.tar')]);
      const converted = await execFileP('ctr-remote', ['-a', containerd.address, '-n', containerd.namespace, 'image', 'convert', '--estargz', '--oci', SRC, DST], { timeout: 120_000 });
      const manifestDigest = converted.stdout.match(/sha256:[0-9a-f]{64}/)?.[0];
      assert.ok(manifestDigest, `ctr-remote printed no manifest digest: ${converted.stdout}`);
      // Push the reference's blobs and manifest to the registry exactly as ctr-remote wrote them.
      const blobs = join(containerd.root, 'io.containerd.content.v1.content', 'blobs', 'sha256');
      const manifestBody = await readFile(join(blobs, manifestDigest.slice(7)));
      const manifest = JSON.parse(manifestBody.toString()) as { mediaType?: string; config: { digest: string }; layers: Array<{ digest: string; annotations?: Record<string, string> }> };
      const client = new RegistryClient({ plainHttp: true });
      try {
        const target = parseReference(`${registry!.host}/ref/compat:esgz`);
        for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
          const data = await readFile(join(blobs, d.slice(7)));
          await client.pushBlob(target, d, data.length, () => Readable.from([data]));
        }
        await client.putManifest(target, manifest.mediaType ?? 'application/vnd.oci.image.manifest.v1+json', manifestBody);
      } finally {
        await client.close();
      }
      ref = `${registry!.host}/ref/compat:esgz`;
      layers = manifest.layers.map((l, i) => {
        assert.ok(l.annotations?.[TOC_DIGEST], 'ctr-remote annotates the TOC digest');
        return { digest: l.digest, original: source.layers[i].blobPath };
      });
    });

    after(async function () {
      await containerd?.stop();
    });

    it('mount and compare equal to the original layers extracted by tar', async function () {
      for (const [i, l] of layers.entries()) {
        const m = await mount(ref, l.digest, `compat-${i}`);
        const extracted = join(work, `compat-extracted-${i}`);
        await extractWithTar(l.original, extracted);
        const diffs = compareTrees(asOverlayLower(await dumpTree(extracted)), await dumpTree(m.mountpoint));
        assert.deepEqual(diffs, [], `layer ${i} (${l.digest})`);
        assert.equal(await m.stop(), 0, 'clean exit');
        assert.deepEqual(await mountsAt(m.mountpoint), []);
      }
    });
  });

  describe('overlayfs over two mounted layers', function () {
    let merged = '';

    after(async function () {
      if (merged) await lazyUnmount(merged);
    });

    it('shows the merged view: whiteouts hide lower files, an opaque dir hides lower contents', async function () {
      requireBinary(this, 'mount');
      const image = await publishConverted(join(work, 'overlay'), registry!.host, 'lazy/overlay:v1', [
        {
          entries: [
            { type: 'dir', path: 'base', mode: 0o755 },
            { type: 'file', path: 'base/keep.txt', content: 'kept\n' },
            { type: 'file', path: 'base/remove.txt', content: 'removed\n' },
            { type: 'dir', path: 'base/opaque', mode: 0o755 },
            { type: 'file', path: 'base/opaque/old1.txt', content: 'old1\n' },
            { type: 'file', path: 'base/opaque/old2.txt', content: 'old2\n' },
            { type: 'file', path: 'base/changed.txt', content: 'before\n' },
          ],
        },
        {
          entries: [
            { type: 'whiteout', path: 'base/remove.txt' },
            { type: 'opaque', path: 'base/opaque' },
            { type: 'file', path: 'base/opaque/new.txt', content: 'new\n' },
            { type: 'file', path: 'base/changed.txt', content: 'after\n' },
          ],
        },
      ]);
      const lower = await mount(image.ref, image.layers[0], 'ovl-lower');
      const upper = await mount(image.ref, image.layers[1], 'ovl-upper');
      merged = join(work, 'merged');
      await mkdir(merged);
      await execFileP('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${upper.mountpoint}:${lower.mountpoint}`, merged]);
      const tree = await dumpTree(merged);
      assert.deepEqual(
        Object.keys(tree).filter((p) => p !== '').sort(),
        ['base', 'base/changed.txt', 'base/keep.txt', 'base/opaque', 'base/opaque/new.txt'],
      );
      const { stdout } = await execFileP('cat', [join(merged, 'base/keep.txt'), join(merged, 'base/changed.txt'), join(merged, 'base/opaque/new.txt')]);
      assert.equal(stdout, 'kept\nafter\nnew\n');
      // A writable container view on top works too (upperdir on local disk).
      const rw = join(work, 'rw');
      await mkdir(join(rw, 'upper'), { recursive: true });
      await mkdir(join(rw, 'work'));
      await mkdir(join(rw, 'merged'));
      await execFileP('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${upper.mountpoint}:${lower.mountpoint},upperdir=${rw}/upper,workdir=${rw}/work`, join(rw, 'merged')]);
      try {
        await execFileP('bash', ['-c', 'echo written > "$1/base/keep.txt" && rm "$1/base/opaque/new.txt" && cat "$1/base/keep.txt" && ls -A "$1/base/opaque"', 'bash', join(rw, 'merged')]).then(({ stdout: out }) => assert.equal(out, 'written\n'));
      } finally {
        await lazyUnmount(join(rw, 'merged'));
      }
      await lazyUnmount(merged);
      merged = '';
    });
  });
});
