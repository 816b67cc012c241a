/**
 * Registry authentication against a real docker-registry: htpasswd (Basic)
 * with credentials from a docker config.json, and the bearer-token flow
 * with tokens from the fixture's token service. Every failure must name
 * the reference and never carry a secret.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { isLazypullError, LazypullError } from '../src/errors';
import { RegistryClient, RegistryClientOptions } from '../src/registry/client';
import { computeDigest } from '../src/registry/digest';
import { OCI_CONFIG, OCI_MANIFEST } from '../src/registry/media-types';
import { ImageReference, parseReference } from '../src/registry/reference';
import { RegistryFixture, skipWithoutRegistry, startRegistry } from './support/registry-fixture';

const USER = 'lazy';
const PASSWORD = 'S3cret-Pa55w0rd-xyzzy';

function secretsOf(username: string, password: string, extra: string[] = []): string[] {
  return [
    password,
    Buffer.from(`${username}:${password}`).toString('base64'),
    Buffer.from(password).toString('base64'),
    ...extra,
  ];
}

/** Everything a caller might print or log about an error, checked for secrets. */
function assertNoSecrets(err: unknown, secrets: string[]): void {
  const e = err as LazypullError;
  const cause = e.cause as Error | undefined;
  const texts = [
    e.message,
    String(e),
    e.stack ?? '',
    JSON.stringify(e.details),
    cause === undefined ? '' : `${String(cause)} ${cause.message} ${cause.stack ?? ''}`,
    inspect(e, { depth: 10 }),
  ];
  for (const text of texts) {
    for (const secret of secrets) assert.ok(!text.includes(secret), `secret leaked into: ${text.slice(0, 500)}`);
  }
}

/** Runs `fn` with LAZYPULL_DEBUG=registry and returns what it wrote to stderr. */
async function captureDebug(fn: () => Promise<unknown>): Promise<string> {
  const saved = process.env.LAZYPULL_DEBUG;
  const write = process.stderr.write.bind(process.stderr);
  let out = '';
  process.env.LAZYPULL_DEBUG = 'registry';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn().catch(() => undefined);
  } finally {
    process.stderr.write = write;
    if (saved === undefined) delete process.env.LAZYPULL_DEBUG;
    else process.env.LAZYPULL_DEBUG = saved;
  }
  return out;
}

async function pushImage(client: RegistryClient, ref: ImageReference): Promise<{ digest: string; layer: Buffer; layerDigest: string }> {
  const config = Buffer.from(`{"architecture":"amd64","os":"linux","n":"${randomBytes(4).toString('hex')}"}`);
  const layer = randomBytes(20000);
  const layerDigest = computeDigest(layer);
  await client.pushBlob(ref, computeDigest(config), config.length, () => Readable.from([config]));
  await client.pushBlob(ref, layerDigest, layer.length, () => Readable.from([layer]), { chunkSize: 8192 });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: computeDigest(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
    }),
  );
  const digest = await client.putManifest(ref, OCI_MANIFEST, manifest);
  return { digest, layer, layerDigest };
}

describe('registry auth', function () {
  let tmp: string;
  const clients: RegistryClient[] = [];
  const newClient = (opts: RegistryClientOptions): RegistryClient => {
    const client = new RegistryClient({ retries: 1, retryDelayMs: 10, ...opts });
    clients.push(client);
    return client;
  };
  const writeConfig = (name: string, content: unknown): string => {
    const path = join(tmp, name);
    writeFileSync(path, JSON.stringify(content));
    return path;
  };

  before(function () {
    skipWithoutRegistry(this, ['htpasswd', 'token']);
    tmp = mkdtempSync(join(tmpdir(), 'lazypull-auth-test-'));
  });
  afterEach(async () => {
    while (clients.length > 0) await clients.pop()!.close();
  });
  after(() => {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  });

  describe('htpasswd (Basic)', () => {
    let registry: RegistryFixture | undefined;
    let host: string;
    before(async () => {
      registry = await startRegistry({ htpasswd: { username: USER, password: PASSWORD } });
      host = registry.host;
    });
    after(async () => {
      await registry?.stop();
    });

    it('pushes and pulls with credentials from docker config auths[...].auth', async () => {
      const dockerConfigPath = writeConfig('basic-ok.json', {
        auths: { [`http://${host}`]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } },
      });
      const client = newClient({ plainHttp: [host], dockerConfigPath });
      const ref = parseReference(`${host}/basic/app:v1`);
      const pushed = await pushImage(client, ref);
      const got = await client.getManifest(ref);
      assert.equal(got.digest, pushed.digest);
      assert.deepEqual(await client.getBlobRange(ref, pushed.layerDigest, 10, 19), pushed.layer.subarray(10, 20));
    });

    it('accepts username/password fields under a "host:port" key', async () => {
      const dockerConfigPath = writeConfig('basic-fields.json', { auths: { [host]: { username: USER, password: PASSWORD } } });
      const client = newClient({ plainHttp: [host], dockerConfigPath });
      const ref = parseReference(`${host}/basic/fields:v1`);
      const pushed = await pushImage(client, ref);
      assert.equal((await client.getManifest(ref)).digest, pushed.digest);
    });

    it('fails with REGISTRY_AUTH and no secret when the password is wrong', async () => {
      const wrong = 'Wr0ng-Pa55-plugh';
      const dockerConfigPath = writeConfig('basic-wrong.json', {
        auths: { [`https://${host}`]: { auth: Buffer.from(`${USER}:${wrong}`).toString('base64') } },
      });
      const client = newClient({ plainHttp: [host], dockerConfigPath });
      const ref = parseReference(`${host}/basic/app:v1`);
      let caught: unknown;
      const debugOutput = await captureDebug(async () => {
        await client.getManifest(ref).catch((err: unknown) => {
          caught = err;
        });
      });
      assert.ok(isLazypullError(caught, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(caught));
      assert.ok(caught.message.startsWith(`registry ${host}/basic/app:v1: GET manifest failed: 401 Unauthorized`), caught.message);
      assert.ok(caught.message.includes(`credentials for ${host} from docker config ${dockerConfigPath} were rejected`), caught.message);
      assert.equal(caught.details.status, 401);
      assertNoSecrets(caught, secretsOf(USER, wrong, secretsOf(USER, PASSWORD)));
      assert.ok(debugOutput.length > 0, 'debug tracing printed nothing');
      for (const secret of secretsOf(USER, wrong)) assert.ok(!debugOutput.includes(secret), debugOutput);

      // The same for a push with explicit credentials.
      const explicit = newClient({ plainHttp: [host], credentials: { username: USER, password: wrong } });
      const data = Buffer.from('blob');
      await assert.rejects(explicit.pushBlob(ref, computeDigest(data), data.length, () => Readable.from([data])), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(err));
        assert.match(err.message, /HEAD blob failed: 401 Unauthorized/);
        assertNoSecrets(err, secretsOf(USER, wrong));
        return true;
      });
    });

    it('says no credentials were found when the config has none for the host', async () => {
      const dockerConfigPath = writeConfig('basic-none.json', { auths: { 'other.example:5000': { auth: 'eDp5' } } });
      const client = newClient({ plainHttp: [host], dockerConfigPath });
      await assert.rejects(client.getManifest(parseReference(`${host}/basic/app:v1`)), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(err));
        assert.match(err.message, new RegExp(`401 Unauthorized.*no credentials for ${host} were found`));
        return true;
      });
    });
  });

  describe('bearer tokens', () => {
    let registry: RegistryFixture | undefined;
    let reg: RegistryFixture;
    before(async () => {
      registry = await startRegistry({
        token: {
          username: USER,
          password: PASSWORD,
          anonymousPull: true,
          // "private/*" is readable only by the user; nobody may pull "locked/*".
          grant: (account, type, name, requested) => {
            if (type !== 'repository' || name.startsWith('locked/')) return [];
            if (account === undefined) return name.startsWith('private/') ? [] : requested.filter((a) => a === 'pull');
            return requested;
          },
        },
      });
      reg = registry;
    });
    after(async () => {
      await registry?.stop();
    });
    const configWith = (name: string, password: string): string =>
      writeConfig(name, { auths: { [reg.host]: { auth: Buffer.from(`${USER}:${password}`).toString('base64') } } });

    it('gets a token per scope, caches it, and pushes and pulls with it', async () => {
      const client = newClient({ plainHttp: [reg.host], dockerConfigPath: configWith('token-ok.json', PASSWORD) });
      const ref = parseReference(`${reg.host}/private/app:v1`);
      const before = reg.token!.requests.length;
      const pushed = await pushImage(client, ref);
      const afterPush = reg.token!.requests.length;
      assert.equal(afterPush - before, 1, 'one token for the whole push');
      assert.deepEqual(reg.token!.requests[before]?.scopes, ['repository:private/app:pull,push']);
      assert.equal(reg.token!.requests[before]?.account, USER);

      for (let i = 0; i < 3; i++) {
        assert.equal((await client.getManifest(ref)).digest, pushed.digest);
        assert.deepEqual(await client.getBlobRange(ref, pushed.layerDigest, 0, 99), pushed.layer.subarray(0, 100));
      }
      assert.deepEqual(await readStream(await client.getBlob(ref, pushed.layerDigest)), pushed.layer);
      assert.equal(reg.token!.requests.length, afterPush, 'the push token serves the pulls too');
    });

    it('lets anonymous clients pull public repositories but not push', async () => {
      const owner = newClient({ plainHttp: [reg.host], credentials: { username: USER, password: PASSWORD } });
      const ref = parseReference(`${reg.host}/public/app:v1`);
      const pushed = await pushImage(owner, ref);
      const anonymous = newClient({ plainHttp: [reg.host], dockerConfigPath: join(tmp, 'missing.json') });
      assert.equal((await anonymous.getManifest(ref)).digest, pushed.digest);
      const data = Buffer.from('anon');
      await assert.rejects(anonymous.pushBlob(ref, computeDigest(data), data.length, () => Readable.from([data])), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(err));
        assert.match(err.message, new RegExp(`registry ${reg.host}/public/app@sha256:[0-9a-f]{64}: POST blob upload failed: 401 Unauthorized`));
        assert.match(err.message, /no credentials .* were found/);
        return true;
      });
      await assert.rejects(anonymous.getManifest(parseReference(`${reg.host}/private/app:v1`)), (err: unknown) =>
        isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'),
      );
    });

    it('refreshes a token the registry refuses, once', async () => {
      const owner = newClient({ plainHttp: [reg.host], credentials: { username: USER, password: PASSWORD } });
      const ref = parseReference(`${reg.host}/private/refresh:v1`);
      const pushed = await pushImage(owner, ref);

      reg.token!.expireNext(1);
      const client = newClient({ plainHttp: [reg.host], credentials: { username: USER, password: PASSWORD } });
      let before = reg.token!.requests.length;
      assert.equal((await client.getManifest(ref)).digest, pushed.digest);
      assert.equal(reg.token!.requests.length - before, 2, 'the expired token and its replacement');

      reg.token!.expireNext(2);
      const unlucky = newClient({ plainHttp: [reg.host], credentials: { username: USER, password: PASSWORD } });
      before = reg.token!.requests.length;
      await assert.rejects(unlucky.getManifest(ref), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(err));
        assert.match(err.message, /GET manifest failed: 401 Unauthorized/);
        return true;
      });
      assert.equal(reg.token!.requests.length - before, 2, 'refreshed exactly once');
    });

    it('mounts across repositories with pull on the source in the token, and uploads without it', async () => {
      const client = newClient({ plainHttp: [reg.host], credentials: { username: USER, password: PASSWORD } });
      const data = randomBytes(3000);
      const digest = computeDigest(data);
      const open = (): Readable => Readable.from([data]);
      assert.equal(await client.pushBlob(parseReference(`${reg.host}/private/src:v1`), digest, data.length, open), 'uploaded');
      const before = reg.token!.requests.length;
      assert.equal(
        await client.pushBlob(parseReference(`${reg.host}/private/dst:v1`), digest, data.length, open, { mountFrom: 'private/src' }),
        'mounted',
      );
      assert.deepEqual(reg.token!.requests[before]?.scopes, ['repository:private/dst:pull,push', 'repository:private/src:pull']);

      // The token grants nothing on locked/*: the registry refuses the mount and the client uploads instead.
      const other = randomBytes(1000);
      const otherDigest = computeDigest(other);
      const lockedRef = parseReference(`${reg.host}/private/dst2:v1`);
      assert.equal(
        await client.pushBlob(lockedRef, otherDigest, other.length, () => Readable.from([other]), { mountFrom: 'locked/src' }),
        'uploaded',
      );
      assert.equal(await client.blobExists(lockedRef, otherDigest), true);
    });

    it('fails with REGISTRY_AUTH naming the token service, and no secret, for a wrong password', async () => {
      const wrong = 'Not-The-Pa55word-frotz';
      const dockerConfigPath = configWith('token-wrong.json', wrong);
      const client = newClient({ plainHttp: [reg.host], dockerConfigPath });
      const ref = parseReference(`${reg.host}/private/app:v1`);
      await assert.rejects(client.getManifest(ref), (err: unknown) => {
        assert.ok(isLazypullError(err, 'LAZYPULL_ERR_REGISTRY_AUTH'), String(err));
        assert.ok(err.message.startsWith(`registry ${reg.host}/private/app:v1: GET manifest failed: token service ${reg.token!.realm}`), err.message);
        assert.ok(err.message.includes(`rejected credentials from docker config ${dockerConfigPath} (401 Unauthorized)`), err.message);
        const tokens = reg.token!.requests.flatMap((r) => (r.token === undefined ? [] : [r.token]));
        assertNoSecrets(err, secretsOf(USER, wrong, [...secretsOf(USER, PASSWORD), ...tokens]));
        return true;
      });
    });

    it('reads the token from access_token as well', async () => {
      const other = await startRegistry({ token: { username: USER, password: PASSWORD, tokenField: 'access_token', expiresIn: 120 } });
      try {
        const client = newClient({ plainHttp: [other.host], credentials: { username: USER, password: PASSWORD } });
        const ref = parseReference(`${other.host}/x/y:z`);
        const pushed = await pushImage(client, ref);
        assert.equal((await client.getManifest(ref)).digest, pushed.digest);
      } finally {
        await other.stop();
      }
    });
  });
});

async function readStream(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
