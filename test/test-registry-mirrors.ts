/**
 * Mirrors from containerd's hosts.toml, against two real registries:
 * reads go to the mirror first and fall back to the origin.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RegistryClient } from '../src/registry/client';
import { MirroringRegistryClient } from '../src/registry/mirroring-client';
import { startRegistry, skipWithoutRegistry, type RegistryFixture } from './support/registry-fixture';
import { freePort } from './support/registry-fixture';

describe('registry mirrors (hosts.toml)', function () {
  let origin: RegistryFixture;
  let mirror: RegistryFixture;
  let dir: string;
  const data = randomBytes(300_000);
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;

  async function push(host: string): Promise<void> {
    const client = new RegistryClient({ plainHttp: true });
    try {
      await client.pushBlob({ registry: host, repository: 'library/app' }, digest, data.length, () => Readable.from([data]));
    } finally {
      await client.close();
    }
  }

  async function writeHosts(registry: string, toml: string): Promise<void> {
    await mkdir(join(dir, registry), { recursive: true });
    await writeFile(join(dir, registry, 'hosts.toml'), toml);
  }

  before(async function () {
    skipWithoutRegistry(this);
    dir = await mkdtemp(join(tmpdir(), 'lzp-hosts-'));
    origin = await startRegistry();
    mirror = await startRegistry();
    await push(origin.host);
  });

  after(async function () {
    await origin?.stop();
    await mirror?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('falls back to the origin when the mirror lacks the blob, with plain HTTP from `server`', async function () {
    await writeHosts(origin.host, `server = "http://${origin.host}"\n[host."http://${mirror.host}"]\n  capabilities = ["pull", "resolve"]\n`);
    const client = new MirroringRegistryClient({ hostsDir: dir });
    try {
      const part = await client.getBlobRange({ registry: origin.host, repository: 'library/app' }, digest, 1000, 1999);
      assert.deepEqual(part, data.subarray(1000, 2000));
    } finally {
      await client.close();
    }
  });

  it('reads from the mirror first: with the origin gone, a mirrored blob is still served', async function () {
    await push(mirror.host);
    const deadPort = await freePort();
    const gone = `127.0.0.1:${deadPort}`;
    await writeHosts(gone, `server = "http://${gone}"\n[host."http://${mirror.host}"]\n  capabilities = ["pull"]\n`);
    const client = new MirroringRegistryClient({ hostsDir: dir, retries: 1 });
    try {
      const part = await client.getBlobRange({ registry: gone, repository: 'library/app' }, digest, 0, 99);
      assert.deepEqual(part, data.subarray(0, 100));
      const exists = await client.blobExists({ registry: gone, repository: 'library/app' }, digest);
      assert.equal(exists, true);
    } finally {
      await client.close();
    }
  });

  it('skips a mirror that is down and reports the origin when both fail', async function () {
    const deadMirror = `127.0.0.1:${await freePort()}`;
    await writeHosts(origin.host, `server = "http://${origin.host}"\n[host."http://${deadMirror}"]\n`);
    const client = new MirroringRegistryClient({ hostsDir: dir, retries: 1, retryDelayMs: 10 });
    try {
      const part = await client.getBlobRange({ registry: origin.host, repository: 'library/app' }, digest, 5, 9);
      assert.deepEqual(part, data.subarray(5, 10));
      const missing = `sha256:${'0'.repeat(64)}`;
      await assert.rejects(client.getBlobRange({ registry: origin.host, repository: 'library/app' }, missing, 0, 9), (err: Error) => {
        assert.ok(err.message.includes(origin.host), err.message);
        assert.match(err.message, /404/);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  it('refuses a hosts.toml that is not TOML, naming the file', async function () {
    await writeHosts('broken.example:5000', 'server = [unclosed');
    const client = new MirroringRegistryClient({ hostsDir: dir });
    try {
      await assert.rejects(client.getBlobRange({ registry: 'broken.example:5000', repository: 'x' }, digest, 0, 1), /hosts\.toml: invalid TOML/);
    } finally {
      await client.close();
    }
  });
});
