/**
 * End to end with the real runtime: lazypull converts an OCI layout and pushes
 * it to a loopback registry; stock containerd (overlayfs, no lazypull
 * snapshotter) pulls it the normal way and runs it. This proves the eStargz
 * blobs are ordinary tar.gz layers with correct diff IDs and annotations.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import { Containerd, startContainerd } from './support/containerd-fixture';
import { BuiltImage, buildBusyboxImage, HELLO_TEXT, pseudoRandomBytes } from './support/oci-image';
import { RegistryFixture, startRegistry } from './support/registry-fixture';
import { requireBinary, requireFile, requireRoot } from './support/require-env';

const execFileP = promisify(execFile);
const CLI = join(__dirname, '..', 'src', 'cli', 'main.js');
const TOC_DIGEST = 'containerd.io/snapshot/stargz/toc.digest';
const UNCOMPRESSED_SIZE = 'io.containers.estargz.uncompressed-size';
const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string };
}

interface Manifest {
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  manifests?: Descriptor[];
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function lazypull(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  try {
    const { stdout } = await execFileP(process.execPath, [CLI, ...args], { env, maxBuffer: 16 * 1024 * 1024, timeout: 180_000 });
    return stdout;
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    throw new Error(`lazypull ${args.join(' ')} exited ${String(e.code)}: ${e.stderr ?? ''}`);
  }
}

/** A plain HTTP GET against the loopback registry (never anywhere else). */
async function registryGet(host: string, path: string, auth?: string, accept = ACCEPT): Promise<Buffer> {
  assert.ok(host.startsWith('127.0.0.1:'));
  const headers: Record<string, string> = { Accept: accept };
  if (auth) headers.Authorization = `Basic ${Buffer.from(auth).toString('base64')}`;
  const res = await fetch(`http://${host}${path}`, { headers });
  assert.equal(res.status, 200, `GET ${path}`);
  return Buffer.from(await res.arrayBuffer());
}

/** The pushed image manifest for this platform (following an index if lazypull pushed one). */
async function pushedManifest(host: string, repo: string, tag: string, auth?: string): Promise<Manifest> {
  let manifest = JSON.parse((await registryGet(host, `/v2/${repo}/manifests/${tag}`, auth)).toString()) as Manifest;
  if (manifest.manifests) {
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    const pick = manifest.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === arch);
    assert.ok(pick, 'index has a manifest for this platform');
    manifest = JSON.parse((await registryGet(host, `/v2/${repo}/manifests/${pick.digest}`, auth)).toString()) as Manifest;
  }
  return manifest;
}

/** Check what a lazy-pulling snapshotter needs from the descriptors and what any runtime needs from the config. */
async function checkPushedImage(host: string, repo: string, tag: string, auth?: string): Promise<void> {
  const manifest = await pushedManifest(host, repo, tag, auth);
  const config = JSON.parse((await registryGet(host, `/v2/${repo}/blobs/${manifest.config.digest}`, auth)).toString()) as {
    rootfs: { diff_ids: string[] };
  };
  assert.equal(manifest.layers.length, config.rootfs.diff_ids.length);
  for (const [i, layer] of manifest.layers.entries()) {
    assert.match(layer.mediaType, /tar\+gzip|tar\.gzip/);
    assert.match(layer.annotations?.[TOC_DIGEST] ?? '', /^sha256:[0-9a-f]{64}$/, `layer ${i} ${TOC_DIGEST}`);
    assert.match(layer.annotations?.[UNCOMPRESSED_SIZE] ?? '', /^\d+$/, `layer ${i} ${UNCOMPRESSED_SIZE}`);
    const blob = await registryGet(host, `/v2/${repo}/blobs/${layer.digest}`, auth, '*/*');
    assert.equal(sha256(blob), layer.digest);
    const tar = gunzipSync(blob);
    assert.equal(String(tar.length), layer.annotations?.[UNCOMPRESSED_SIZE]);
    assert.equal(sha256(tar), config.rootfs.diff_ids[i], `layer ${i} diff_id`);
  }
}

const BIG_SHA256 = createHash('sha256').update(pseudoRandomBytes(5 * 1024 * 1024 + 123)).digest('hex');
/** Reads files from all three layers: symlink, hardlink, whiteout, opaque dir, chunked file. */
const PROBE = 'cat /app/hello-sym /app/hello-link.txt; test -e /etc/group && echo group-present || echo group-gone; ls /app/shared; sha256sum /app/data/big.bin';
const PROBE_OUTPUT = `${HELLO_TEXT}${HELLO_TEXT}group-gone\nnew.txt\n${BIG_SHA256}  /app/data/big.bin\n`;

describe('end to end: lazypull convert → registry → containerd pull and run', function () {
  this.timeout(240_000);
  let work = '';
  let containerd: Containerd | undefined;
  let image: BuiltImage;
  let counter = 0;

  before(async function () {
    requireRoot(this);
    for (const bin of ['containerd', 'ctr', 'runc', 'docker-registry', 'htpasswd']) requireBinary(this, bin);
    requireFile(this, CLI, 'the lazypull CLI (run tsc)');
    work = await mkdtemp(join(tmpdir(), 'lzp-e2e-'));
    image = await buildBusyboxImage(join(work, 'src'), 'v1');
    containerd = await startContainerd();
  });

  after(async function () {
    await containerd?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function pullAndRun(ref: string, pullArgs: string[]): Promise<void> {
    const c = containerd as Containerd;
    await c.ctr(['image', 'pull', '--plain-http', ...pullArgs, ref], { timeoutMs: 120_000 });
    const run = async (cmd: string[]): Promise<string> =>
      (await c.ctr(['run', '--rm', '--runc-root', c.runcRoot, ref, `e2e-${++counter}`, ...cmd], { timeoutMs: 60_000 })).stdout;
    assert.equal(await run([]), HELLO_TEXT, 'the image command prints the app file');
    assert.equal(await run(['/bin/sh', '-c', PROBE]), PROBE_OUTPUT);
  }

  describe('anonymous registry', function () {
    let registry: RegistryFixture | undefined;
    before(async function () {
      registry = await startRegistry();
    });
    after(async function () {
      await registry?.stop();
    });

    it('converts and pushes with annotations, then containerd pulls and runs it', async function () {
      const host = (registry as RegistryFixture).host;
      const ref = `${host}/e2e/app:v1`;
      await lazypull(['convert', `oci:${image.dir}:v1`, ref, '--plain-http']);
      await checkPushedImage(host, 'e2e/app', 'v1');
      await pullAndRun(ref, []);
    });
  });

  describe('registry with htpasswd auth', function () {
    const user = { username: 'e2e-user', password: 'e2e-pass-Zx9' };
    let registry: RegistryFixture | undefined;
    before(async function () {
      registry = await startRegistry({ htpasswd: user });
    });
    after(async function () {
      await registry?.stop();
    });

    it('pushes with docker config.json credentials, and ctr pulls with --user', async function () {
      const host = (registry as RegistryFixture).host;
      const ref = `${host}/e2e/private:v1`;
      const home = join(work, 'home');
      const dockerConfig = join(home, '.docker');
      await mkdir(dockerConfig, { recursive: true });
      const auth = Buffer.from(`${user.username}:${user.password}`).toString('base64');
      await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [host]: { auth } } }), { mode: 0o600 });
      const env = { ...process.env, HOME: home, DOCKER_CONFIG: dockerConfig };
      const nobody = join(work, 'home-without-credentials');
      await mkdir(nobody, { recursive: true });
      const anonymous = { ...process.env, HOME: nobody, DOCKER_CONFIG: nobody };

      await assert.rejects(lazypull(['convert', `oci:${image.dir}:v1`, ref, '--plain-http'], anonymous), 'no credentials, no push');
      await lazypull(['convert', `oci:${image.dir}:v1`, ref, '--plain-http'], env);
      await checkPushedImage(host, 'e2e/private', 'v1', `${user.username}:${user.password}`);
      await pullAndRun(ref, ['--user', `${user.username}:${user.password}`]);
    });
  });
});
