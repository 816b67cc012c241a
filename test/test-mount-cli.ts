/**
 * `lazypull mount` as a user runs it: registries with htpasswd and token
 * auth, refusals (TOC digest mismatch, missing annotation, a layer that is
 * not eStargz), a registry that dies while mounted (EIO in bounded time, the
 * mount stays up), a stale mount point left by kill -9, `--status`, and a
 * clean exit on SIGTERM. Each mount runs in its own process.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../src/registry/client';
import { parseReference } from '../src/registry/reference';
import { runCli } from './support/cli';
import {
  execFileP,
  lazyUnmount,
  mountsAt,
  mountsUnder,
  publishConverted,
  pushOciLayout,
  retagWithAnnotations,
  startMount,
  type MountProcess,
  type PublishedImage,
} from './support/mount-fixture';
import { startFaultyProxy } from './support/faulty-proxy';
import { appLayer, HELLO_TEXT } from './support/oci-image';
import { skipWithoutRegistry, startRegistry, type RegistryFixture } from './support/registry-fixture';
import { requireBinary, requireFuse, requireRoot } from './support/require-env';

const TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';
const USER = 'mountuser';
const PASSWORD = 'mount-secret-pw';

function smallLayer(): Array<{ entries: ReturnType<typeof appLayer> }> {
  return [{ entries: appLayer() }];
}

describe('lazypull mount (CLI)', function () {
  this.timeout(180_000);
  let work = '';
  const mounts: MountProcess[] = [];
  const registries: RegistryFixture[] = [];

  const args = (name: string, extra: string[] = []): string[] => [
    '--plain-http',
    '--cache-dir',
    join(work, `cache-${name}`),
    '--state-dir',
    join(work, 'state'),
    ...extra,
  ];
  const mountpoint = (name: string): string => join(work, 'mnt', name);
  const mountOk = async (ref: string, layer: string, name: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<MountProcess> => {
    const started = await startMount([ref, layer, mountpoint(name), ...args(name, extra)], mountpoint(name), { env });
    mounts.push(started.mount);
    assert.ok(started.mounted, `mount ${name} failed (exit ${started.code}): ${started.mount.stderr()}`);
    return started.mount;
  };
  const status = async (mp: string): Promise<Record<string, unknown>> => {
    const res = await runCli(['mount', '--status', mp, '--json', '--state-dir', join(work, 'state')]);
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout) as Record<string, unknown>;
  };
  const dockerConfig = async (name: string, host: string): Promise<string> => {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [host]: { auth } } }));
    return dir;
  };

  before(async function () {
    requireRoot(this);
    requireFuse(this);
    skipWithoutRegistry(this, ['htpasswd', 'token']);
    for (const bin of ['tar', 'python3', 'cat', 'umount']) requireBinary(this, bin);
    work = await mkdtemp(join(tmpdir(), 'lzp-mount-cli-'));
  });

  after(async function () {
    for (const m of mounts) await m.stop();
    for (const r of registries) await r.stop();
    if (!work) return;
    for (const mp of (await mountsUnder(work)).reverse()) await lazyUnmount(mp);
    const left = await mountsUnder(work);
    await rm(work, { recursive: true, force: true });
    assert.deepEqual(left, [], 'nothing is left mounted');
  });

  describe('auth', function () {
    it('mounts from a registry with htpasswd basic auth (credentials from DOCKER_CONFIG)', async function () {
      const reg = await startRegistry({ htpasswd: { username: USER, password: PASSWORD } });
      registries.push(reg);
      const env = { DOCKER_CONFIG: await dockerConfig('docker-basic', reg.host) };
      const image = await publishConverted(join(work, 'basic'), reg.host, 'private/app:v1', smallLayer(), env);
      // Without credentials: refused, nothing mounted.
      const anon = await startMount([image.ref, image.layers[0], mountpoint('basic-anon'), ...args('basic-anon')], mountpoint('basic-anon'), {
        env: { DOCKER_CONFIG: join(work, 'no-such-config') },
      });
      assert.equal(anon.mounted, false);
      assert.match(anon.mount.stderr(), /LAZYPULL_ERR_REGISTRY_AUTH/);
      assert.deepEqual(await mountsAt(mountpoint('basic-anon')), []);

      const m = await mountOk(image.ref, image.layers[0], 'basic', ['--no-background-fetch'], env);
      const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      const { stdout: sum } = await execFileP('sha256sum', [join(m.mountpoint, 'app/data/big.bin')]);
      assert.match(sum, /^[0-9a-f]{64} /);
      assert.ok(!m.stderr().includes(PASSWORD), 'the password never reaches the log');
      assert.equal(await m.stop(), 0);
    });

    it('mounts from a registry with the bearer-token flow', async function () {
      const reg = await startRegistry({ token: { username: USER, password: PASSWORD } });
      registries.push(reg);
      const env = { DOCKER_CONFIG: await dockerConfig('docker-token', reg.host) };
      const image = await publishConverted(join(work, 'token'), reg.host, 'private/app:v1', smallLayer(), env);
      const before = reg.token!.requests.length;
      const m = await mountOk(image.ref, image.layers[0], 'token', ['--no-background-fetch'], env);
      const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      const issued = reg.token!.requests.slice(before);
      assert.ok(issued.length >= 1 && issued.every((r) => r.status === 200 && r.account === USER), JSON.stringify(issued));
      for (const t of issued) if (t.token) assert.ok(!m.stderr().includes(t.token), 'no token in the log');
      assert.equal(await m.stop(), 0);
    });
  });

  describe('with an open registry', function () {
    let reg: RegistryFixture;
    let image: PublishedImage;

    before(async function () {
      reg = await startRegistry();
      registries.push(reg);
      image = await publishConverted(join(work, 'open'), reg.host, 'lazy/app:v1', smallLayer());
    });

    describe('refusals (mount refused with a clear error, nothing left mounted)', function () {
      const refused = async (ref: string, layer: string, name: string, code: string, message: RegExp, extra: string[] = []): Promise<void> => {
        const res = await startMount([ref, layer, mountpoint(name), ...args(name, extra)], mountpoint(name));
        if (res.mounted) {
          mounts.push(res.mount);
          assert.fail(`mounted although it should be refused: ${res.mount.stdout()}`);
        }
        assert.equal(res.code, 1);
        assert.match(res.mount.stderr(), new RegExp(code));
        assert.match(res.mount.stderr(), message);
        assert.deepEqual(await mountsAt(mountpoint(name)), []);
      };

      it('a TOC that does not match the toc.digest annotation (also with --no-verify)', async function () {
        const client = new RegistryClient({ plainHttp: true });
        try {
          const tampered = await retagWithAnnotations(client, image.ref, 'tampered', (a) => {
            a[TOC_DIGEST] = `sha256:${'0'.repeat(64)}`;
          });
          await refused(tampered, image.layers[0], 'tampered', 'LAZYPULL_ERR_DIGEST_MISMATCH', /does not match/);
          await refused(tampered, image.layers[0], 'tampered-nv', 'LAZYPULL_ERR_DIGEST_MISMATCH', /does not match/, ['--no-verify']);
        } finally {
          await client.close();
        }
      });

      it('a layer without the annotation, unless --no-verify', async function () {
        const client = new RegistryClient({ plainHttp: true });
        try {
          const bare = await retagWithAnnotations(client, image.ref, 'unannotated', (a) => {
            delete a[TOC_DIGEST];
          });
          await refused(bare, image.layers[0], 'bare', 'LAZYPULL_ERR_DIGEST_MISMATCH', /no containerd\.io\/snapshot\/stargz\/toc\.digest annotation/);
          const m = await mountOk(bare, image.layers[0], 'bare-nv', ['--no-verify', '--no-background-fetch']);
          const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
          assert.equal(stdout, HELLO_TEXT);
          assert.equal((await status(m.mountpoint)).verified, false);
          assert.equal(await m.stop(), 0);
        } finally {
          await client.close();
        }
      });

      it('a layer that is not eStargz', async function () {
        const client = new RegistryClient({ plainHttp: true });
        try {
          const pushed = await pushOciLayout(client, image.layoutDir, parseReference(`${reg.host}/lazy/plain:v1`));
          await refused(`${reg.host}/lazy/plain:v1`, pushed.layers[0].digest, 'plain', 'LAZYPULL_ERR_NOT_ESTARGZ', /not an eStargz blob/, ['--no-verify']);
        } finally {
          await client.close();
        }
      });

      it('--toc-digest: the given digest is what counts (the manifest is not read); a wrong one is refused', async function () {
        const client = new RegistryClient({ plainHttp: true });
        try {
          const manifest = JSON.parse((await client.getManifest(parseReference(image.ref))).body.toString()) as { layers: Array<{ annotations?: Record<string, string> }> };
          const real = manifest.layers[0].annotations?.[TOC_DIGEST];
          assert.ok(real, 'the converted layer carries its TOC digest');
          // The manifest's annotation is wrong, so a mount that read it would be refused.
          const tampered = await retagWithAnnotations(client, image.ref, 'tampered-known', (a) => {
            a[TOC_DIGEST] = `sha256:${'0'.repeat(64)}`;
          });
          const m = await mountOk(tampered, image.layers[0], 'known-toc', ['--toc-digest', real, '--no-background-fetch']);
          const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
          assert.equal(stdout, HELLO_TEXT);
          const st = await status(m.mountpoint);
          assert.equal(st.tocDigest, real);
          assert.equal(st.verified, true);
          assert.equal(await m.stop(), 0);

          await refused(image.ref, image.layers[0], 'wrong-toc', 'LAZYPULL_ERR_DIGEST_MISMATCH', /does not match/, ['--toc-digest', `sha256:${'0'.repeat(64)}`]);
          const pushed = await pushOciLayout(client, image.layoutDir, parseReference(`${reg.host}/lazy/plain-known:v1`));
          await refused(`${reg.host}/lazy/plain-known:v1`, pushed.layers[0].digest, 'plain-known', 'LAZYPULL_ERR_NOT_ESTARGZ', /not an eStargz blob/, ['--toc-digest', real]);
        } finally {
          await client.close();
        }
      });

      it('a layer the image does not have', async function () {
        await refused(image.ref, `sha256:${'1'.repeat(64)}`, 'nolayer', 'LAZYPULL_ERR_REGISTRY_NOT_FOUND', /has no layer/);
      });
    });

    it('--status reports bytes fetched / local / total; background fetch brings the whole layer local', async function () {
      const m = await mountOk(image.ref, image.layers[0], 'status-bg');
      let st = await status(m.mountpoint);
      assert.equal(st.mountpoint, m.mountpoint);
      assert.equal(st.layer, image.layers[0]);
      assert.ok((st.totalBytes as number) > 5 * 1024 * 1024);
      const deadline = Date.now() + 30_000;
      while (st.localBytes !== st.totalBytes && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 300));
        st = await status(m.mountpoint);
      }
      assert.equal(st.localBytes, st.totalBytes, JSON.stringify(st));
      assert.equal(st.percentLocal, 100);
      assert.equal(st.backgroundFetch, 'done');
      const human = await runCli(['mount', '--status', m.mountpoint, '--state-dir', join(work, 'state')]);
      assert.match(human.stdout, /local\s+\d+ \/ \d+ bytes \(100%/);
      assert.equal(await m.stop(), 0, 'SIGTERM: clean unmount, exit 0');
      assert.deepEqual(await mountsAt(m.mountpoint), []);
      assert.deepEqual(await readdir(join(work, 'state', 'mounts')), [], 'status file removed');
      const gone = await runCli(['mount', '--status', m.mountpoint, '--state-dir', join(work, 'state')]);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /no lazypull mount at/);
    });

    it('prefetches the prioritized files (up to .prefetch.landmark) at mount, in one request', async function () {
      const list = join(work, 'prioritize.txt');
      await writeFile(list, 'app/data/medium.txt\napp/hello.txt\n');
      const img = await publishConverted(join(work, 'prio'), reg.host, 'lazy/prio:v1', smallLayer(), {}, ['--prioritize', list]);
      const m = await mountOk(img.ref, img.layers[0], 'prio', ['--no-background-fetch']);
      let st = await status(m.mountpoint);
      const deadline = Date.now() + 20_000;
      while (st.prefetch !== 'done' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        st = await status(m.mountpoint);
      }
      await new Promise((r) => setTimeout(r, 1100));
      st = await status(m.mountpoint);
      assert.equal(st.prefetch, 'done');
      assert.equal(st.requests, 1, JSON.stringify(st));
      assert.ok((st.localBytes as number) >= 1_000_000 + HELLO_TEXT.length, JSON.stringify(st));
      assert.ok((st.fetchedBytes as number) < (st.blobSize as number) / 2, 'only the prioritized range');
      const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      await execFileP('sha256sum', [join(m.mountpoint, 'app/data/medium.txt')]);
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await status(m.mountpoint)).requests, 1, 'prefetched files need no further request');
      assert.equal(await m.stop(), 0);
    });

    it('a second mount of the layer reads from the cache, with no request for file data', async function () {
      const first = await mountOk(image.ref, image.layers[0], 'cache-a', ['--no-background-fetch', '--cache-dir', join(work, 'shared-cache')]);
      await execFileP('sha256sum', [join(first.mountpoint, 'app/data/big.bin')]);
      assert.equal(await first.stop(), 0);
      const second = await mountOk(image.ref, image.layers[0], 'cache-b', ['--no-background-fetch', '--cache-dir', join(work, 'shared-cache')]);
      await execFileP('sha256sum', [join(second.mountpoint, 'app/data/big.bin')]);
      await new Promise((r) => setTimeout(r, 1200));
      const st = await status(second.mountpoint);
      assert.equal(st.requests, 0, JSON.stringify(st));
      assert.equal(st.fetchedBytes, 0);
      assert.equal(await second.stop(), 0);
    });

    it('a stale mount point left by kill -9 is cleaned up by the next mount', async function () {
      const m = await mountOk(image.ref, image.layers[0], 'stale', ['--no-background-fetch']);
      await m.kill9();
      assert.deepEqual(await mountsAt(m.mountpoint), ['fuse.lazypull'], 'the dead mount is still there');
      const probe = await execFileP('stat', [m.mountpoint]).then(() => '', (e: { stderr: string }) => e.stderr);
      assert.match(probe, /Transport endpoint is not connected/);
      const again = await mountOk(image.ref, image.layers[0], 'stale', ['--no-background-fetch']);
      assert.match(again.stderr(), /stale_mount_cleanup/);
      assert.deepEqual(await mountsAt(again.mountpoint), ['fuse.lazypull'], 'exactly one mount');
      const { stdout } = await execFileP('cat', [join(again.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      // A live mount is not taken over.
      const busy = await startMount([image.ref, image.layers[0], again.mountpoint, ...args('stale-2')], again.mountpoint);
      if (busy.mounted) mounts.push(busy.mount);
      assert.equal(busy.mounted, false);
      assert.match(busy.mount.stderr(), /already a mounted fuse\.lazypull filesystem/);
      assert.equal(await again.stop(), 0);
      assert.deepEqual(await mountsAt(again.mountpoint), []);
    });

    it('mounts while the TOC is on its way: a request that comes early waits for the layer, or fails with EIO when the layer is refused', async function () {
      // The blob's tail (footer and TOC) arrives 3 s late; the mount goes up meanwhile.
      const proxy = await startFaultyProxy(reg.host);
      const client = new RegistryClient({ plainHttp: true });
      const waitForFuseMount = async (mp: string, tailGet: number): Promise<void> => {
        const isFuse = async (): Promise<boolean> => (await mountsAt(mp)).some((t) => t.startsWith('fuse'));
        for (let i = 0; i < 1000 && !(await isFuse()); i++) await new Promise((r) => setTimeout(r, 10));
        const seenAt = Date.now();
        assert.ok(await isFuse(), `${mp} is mounted`);
        // Mounted before the tail was asked for, or while it was held back.
        const tail = proxy.blobGets[tailGet];
        assert.ok(tail === undefined || (tail.fault === 'delay' && (tail.forwardedAt === undefined || tail.forwardedAt > seenAt)), `${mp} was mounted before the TOC came`);
      };
      try {
        proxy.setFault('delay', 1, { delayMs: 3000 });
        const early = mountpoint('early');
        const starting = startMount([image.ref.replace(reg.host, proxy.host), image.layers[0], early, ...args('early', ['--no-background-fetch'])], early);
        await waitForFuseMount(early, 0);
        const reading = execFileP('cat', [join(early, 'app/hello.txt')], { timeout: 30_000 });
        const started = await starting;
        mounts.push(started.mount);
        assert.ok(started.mounted, started.mount.stderr());
        assert.equal((await reading).stdout, HELLO_TEXT);
        assert.deepEqual(
          proxy.blobGets.map((g) => g.fault),
          ['delay', 'none'],
          'the delayed tail, then the file (the read waited: no request before the TOC)',
        );
        assert.equal(await started.mount.stop(), 0);

        const tampered = await retagWithAnnotations(client, image.ref, 'tampered-early', (a) => {
          a[TOC_DIGEST] = `sha256:${'0'.repeat(64)}`;
        });
        proxy.setFault('delay', 1, { delayMs: 3000 });
        const tailGet = proxy.blobGets.length;
        const refused = mountpoint('early-refused');
        const refusing = startMount([tampered.replace(reg.host, proxy.host), image.layers[0], refused, ...args('early-refused')], refused);
        await waitForFuseMount(refused, tailGet);
        const failing = execFileP('cat', [join(refused, 'app/hello.txt')], { timeout: 30_000 }).then(
          () => assert.fail('a file of a refused layer was read'),
          (e: { stderr: string }) => e.stderr,
        );
        const res = await refusing;
        assert.equal(res.mounted, false);
        assert.equal(res.code, 1);
        assert.match(res.mount.stderr(), /LAZYPULL_ERR_DIGEST_MISMATCH/);
        assert.match(await failing, /Input\/output error|Transport endpoint is not connected|No such file/);
        assert.deepEqual(await mountsAt(refused), []);
      } finally {
        await client.close();
        await proxy.close();
      }
    });

    it('the registry dies while mounted: unread files fail with EIO in bounded time, the mount stays up', async function () {
      const dying = await startRegistry();
      registries.push(dying);
      const img = await publishConverted(join(work, 'dying'), dying.host, 'lazy/app:v1', smallLayer());
      const m = await mountOk(img.ref, img.layers[0], 'dying', ['--no-background-fetch', '--read-timeout', '5000']);
      const { stdout } = await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')]);
      assert.equal(stdout, HELLO_TEXT);
      await dying.stop();
      const started = Date.now();
      const err = await execFileP('cat', [join(m.mountpoint, 'app/data/big.bin')], { timeout: 60_000, maxBuffer: 64 << 20 }).then(
        () => assert.fail('cat of an unfetched file succeeded with the registry gone'),
        (e: { stderr: string; killed?: boolean }) => e,
      );
      const elapsed = Date.now() - started;
      assert.equal(err.killed ?? false, false, 'not a hang');
      assert.match(err.stderr, /Input\/output error/);
      assert.ok(elapsed < 12_000, `failed after ${elapsed} ms (read timeout 5000)`);
      console.log(`      read with the registry gone failed with EIO after ${elapsed} ms`);
      // Already-read data is still served; metadata is all local.
      assert.equal((await execFileP('cat', [join(m.mountpoint, 'app/hello.txt')])).stdout, HELLO_TEXT);
      await execFileP('ls', ['-lR', m.mountpoint]);
      assert.equal(m.exited(), false, 'the mount process stays up');
      await new Promise((r) => setTimeout(r, 1100)); // the status file is rewritten every second
      const st = await status(m.mountpoint);
      assert.ok((st.readErrors as number) >= 1, JSON.stringify(st));
      assert.match(m.stderr(), /"event":"read_failed"/);
      assert.equal(await m.stop(), 0);
    });
  });
});
