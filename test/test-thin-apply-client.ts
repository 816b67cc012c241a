/**
 * `lazypull rollout apply` through the thin client the CLI's entry runs
 * before it loads the CLI bundle (src/cli/thin-apply-client.ts): which
 * command lines it takes over, and, with the built CLI against real HTTP
 * servers (the controller's own HTTP API on a controller without pods, and
 * a small server that records what it is sent), that it sends what the
 * full CLI sends and prints and exits exactly as the full CLI does
 * (LAZYPULL_THIN_CLIENT=0) for every outcome. Whether the bundle ran is
 * told by the loader's LAZYPULL_CODE_CACHE_DEBUG line, printed only when it
 * loads the bundle.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseThinApplyArgs } from '../src/cli/thin-apply-client';
import { Controller } from '../src/controller/controller';
import { startHttpApi, type HttpApi } from '../src/controller/http-api';
import { StateStore } from '../src/controller/state-store';
import type { PodRuntime } from '../src/controller/types';
import { CLI_PATH } from './support/cli';
import { cloneSetYaml } from './support/controller-fixture';

const DEBUG_PREFIX = 'lazypull code cache: ';

interface Run {
  code: number;
  stdout: string;
  /** stderr without the loader's debug line */
  stderr: string;
  /** Did the CLI bundle run (the full CLI), or only the thin client? */
  bundle: boolean;
}

/** `lazypull rollout apply ARGS`, the thin client first unless `full`. */
function apply(args: string[], opts: { full?: boolean; stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI_PATH, 'rollout', 'apply', ...args],
      {
        env: { ...process.env, LAZYPULL_SERVER: '', LAZYPULL_DEBUG: '', ...opts.env, LAZYPULL_CODE_CACHE_DEBUG: '1', LAZYPULL_THIN_CLIENT: opts.full ? '0' : '' },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        const lines = stderr.split(/(?<=\n)/);
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : -1) : 0,
          stdout,
          stderr: lines.filter((l) => !l.startsWith(DEBUG_PREFIX)).join(''),
          bundle: lines.some((l) => l.startsWith(DEBUG_PREFIX)),
        });
      },
    );
    child.stdin!.end(opts.stdin ?? '');
  });
}

/** Both paths: the thin client must handle it without the bundle and print and exit as the full CLI does. */
async function bothPaths(args: string[], opts: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const thin = await apply(args, opts);
  const full = await apply(args, { ...opts, full: true });
  assert.equal(full.bundle, true, 'LAZYPULL_THIN_CLIENT=0 runs the full CLI');
  assert.equal(thin.bundle, false, `the thin client handled ${args.join(' ')} (stderr: ${thin.stderr})`);
  assert.deepEqual({ ...thin, bundle: undefined }, { ...full, bundle: undefined }, `same output and exit code for ${args.join(' ')}`);
  return thin;
}

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An HTTP server on a loopback port that records each request and gives the answer `answer` chooses. */
async function recordingServer(answer: (r: Received) => { status: number; headers?: Record<string, string>; body?: unknown }): Promise<{ url: string; received: Received[]; server: Server }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      received.push(r);
      const a = answer(r);
      // As the controller's API sends JSON (http-api.ts).
      const text = a.body === undefined ? '' : `${JSON.stringify(a.body, null, 2)}\n`;
      res.writeHead(a.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...a.headers });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, server };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** A node without pods: pre-warm pulls succeed at once; nothing else is asked of it (the controller's loop is not started). */
function podlessRuntime(): PodRuntime {
  const unused = (): never => {
    throw new Error('not used by these tests');
  };
  return {
    pullImage: async (image) => `sha256:${Buffer.from(image).toString('hex').slice(0, 64).padEnd(64, '0')}`,
    createPod: unused,
    updateContainersInPlace: unused,
    setInPlaceUpdateReady: unused,
    recordInPlaceUpdateState: unused,
    deletePod: unused,
    listPods: async () => [],
  };
}

describe('lazypull rollout apply: the thin client', function () {
  describe('which command lines it takes over', function () {
    it('reads -f, --file, --server and --json in every form commander accepts; the last of a repeated flag counts', function () {
      assert.deepEqual(parseThinApplyArgs(['-f', 'a.yaml']), { file: 'a.yaml', json: false });
      assert.deepEqual(parseThinApplyArgs(['-fa.yaml', '--json']), { file: 'a.yaml', json: true });
      assert.deepEqual(parseThinApplyArgs(['--server', 'http://h:1', '--file', 'a.yaml']), { file: 'a.yaml', server: 'http://h:1', json: false });
      assert.deepEqual(parseThinApplyArgs(['--file=a=b.yaml', '--server=http://h:1', '--json', '--json']), { file: 'a=b.yaml', server: 'http://h:1', json: true });
      assert.deepEqual(parseThinApplyArgs(['-f', '-']), { file: '-', json: false });
      assert.deepEqual(parseThinApplyArgs(['-f-']), { file: '-', json: false });
      // commander reads `-f=x` as the file "=x"; so does the client.
      assert.deepEqual(parseThinApplyArgs(['-f=x']), { file: '=x', json: false });
      assert.deepEqual(parseThinApplyArgs(['-f', 'a', '-f', 'b']), { file: 'b', json: false });
    });

    it('leaves to the CLI what it cannot be sure to read the same way', function () {
      for (const args of [
        [],
        ['--json'],
        ['--help'],
        ['-h', '-f', 'a'],
        ['-f', 'a', 'extra'],
        ['-f', 'a', '--'],
        ['-f'],
        ['-f', ''],
        ['--file='],
        ['-f', '--json'],
        ['-f', '-x'],
        ['-f', 'a', '--server'],
        ['-f', 'a', '--server', '-'],
        ['-f', 'a', '--json=yes'],
        ['-f', 'a', '--no-json'],
        ['-f', 'a', '--filename', 'b'],
        ['-f', 'a', '-j'],
      ]) {
        assert.equal(parseThinApplyArgs(args), undefined, args.join(' '));
      }
    });

    it('loads no large module: no CLI parser, no YAML', function (done) {
      const script = `require(${JSON.stringify(join(CLI_PATH, '..', 'thin-apply-client.js'))}); process.stdout.write(JSON.stringify(Object.keys(require.cache)))`;
      execFile(process.execPath, ['-e', script], (err, stdout) => {
        if (err) return done(err);
        const loaded = (JSON.parse(stdout) as string[]).map((f) => f.slice(join(CLI_PATH, '..', '..', '..').length));
        assert.deepEqual(loaded.sort(), ['/src/cli/command-exit.js', '/src/cli/controller-answer.js', '/src/cli/controller-http.js', '/src/cli/rollout-apply-io.js', '/src/cli/thin-apply-client.js', '/src/errors.js']);
        done();
      });
    });
  });

  describe('the built CLI against an HTTP server', function () {
    let dir: string;
    let manifest: string;
    const manifestText = '# ünïcode stays as it is\napiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nmetadata: {name: web}\n';
    const answer = { name: 'web', updateRevision: '5d8f7c9b6', generation: 3, created: false };

    before(function () {
      dir = mkdtempSync(join(tmpdir(), 'lzp-thin-apply-'));
      manifest = join(dir, 'web.yaml');
      writeFileSync(manifest, manifestText);
    });
    after(function () {
      rmSync(dir, { recursive: true, force: true });
    });

    it('sends the file as it is, with PUT /clonesets, and prints the kubectl line or the JSON', async function () {
      const api = await recordingServer(() => ({ status: 200, body: answer }));
      try {
        const line = await bothPaths(['-f', manifest, '--server', api.url]);
        assert.equal(line.code, 0);
        assert.equal(line.stdout, 'cloneset.apps.kruise.io/web configured (revision 5d8f7c9b6)\n');
        assert.equal(line.stderr, '');
        const json = await bothPaths([`--file=${manifest}`, '--json'], { env: { LAZYPULL_SERVER: `${api.url}/` } });
        assert.equal(json.stdout, `${JSON.stringify(answer)}\n`);
        assert.equal(api.received.length, 4);
        for (const r of api.received) {
          assert.equal(r.method, 'PUT');
          assert.equal(r.url, '/clonesets');
          assert.equal(r.headers['content-type'], 'application/yaml');
          assert.equal(r.body, manifestText);
        }
      } finally {
        await closeServer(api.server);
      }
    });

    it('-f - sends stdin', async function () {
      const api = await recordingServer(() => ({ status: 201, body: { ...answer, created: true } }));
      try {
        const run = await bothPaths(['-f', '-', '--server', api.url], { stdin: manifestText });
        assert.equal(run.stdout, 'cloneset.apps.kruise.io/web created (revision 5d8f7c9b6)\n');
        assert.deepEqual(api.received.map((r) => r.body), [manifestText, manifestText]);
      } finally {
        await closeServer(api.server);
      }
    });

    it("reports the server's error as the full CLI does: its message, redacted, its code, exit code 1", async function () {
      const api = await recordingServer((r) =>
        r.url === '/crash/clonesets'
          ? { status: 500, body: { error: { code: 'LAZYPULL_ERR_CRI', message: 'pull failed: registry said token=s3cr3t' } } }
          : r.url === '/plain/clonesets'
            ? { status: 502 }
            : { status: 400, body: { error: { code: 'LAZYPULL_ERR_INVALID_ARGUMENT', message: 'spec.replicas must be >= 0', field: 'spec.replicas' } } },
      );
      try {
        const invalid = await bothPaths(['-f', manifest, '--server', api.url]);
        assert.equal(invalid.code, 1);
        assert.equal(invalid.stdout, '');
        assert.equal(invalid.stderr, 'lazypull: spec.replicas must be >= 0 [LAZYPULL_ERR_INVALID_ARGUMENT]\n');
        const crash = await bothPaths(['-f', manifest, '--json', '--server', `${api.url}/crash`]);
        assert.equal(crash.stderr, 'lazypull: pull failed: registry said token=*** [LAZYPULL_ERR_CRI]\n');
        const plain = await bothPaths(['-f', manifest, '--server', `${api.url}/plain`]);
        assert.equal(plain.stderr, 'lazypull: PUT /clonesets: HTTP 502 [LAZYPULL_ERR_INVALID_ARGUMENT]\n');
      } finally {
        await closeServer(api.server);
      }
    });

    it('a file that cannot be read: the same error, and nothing is sent', async function () {
      const api = await recordingServer(() => ({ status: 200, body: answer }));
      try {
        const missing = await bothPaths(['-f', join(dir, 'missing.yaml'), '--server', api.url]);
        assert.equal(missing.code, 1);
        assert.equal(missing.stderr, `lazypull: cannot read ${join(dir, 'missing.yaml')} (ENOENT) [LAZYPULL_ERR_INVALID_ARGUMENT]\n`);
        const folder = await bothPaths(['-f', dir, '--server', api.url]);
        assert.match(folder.stderr, /\(EISDIR\)/);
        assert.equal(api.received.length, 0);
      } finally {
        await closeServer(api.server);
      }
    });

    it('a server that is not there, or closes the connection without answering: the same error on both paths', async function () {
      const gone = await recordingServer(() => ({ status: 200 }));
      await closeServer(gone.server);
      const refused = await bothPaths(['-f', manifest, '--server', gone.url]);
      assert.equal(refused.code, 1);
      assert.equal(
        refused.stderr,
        `lazypull: cannot reach the controller at ${gone.url} (ECONNREFUSED); is \`lazypull controller\` running? (--server or LAZYPULL_SERVER) [LAZYPULL_ERR_INVALID_ARGUMENT]\n`,
      );
      const hangUp = createServer((req) => req.socket.end());
      await new Promise<void>((resolve) => hangUp.listen(0, '127.0.0.1', resolve));
      try {
        const closed = await bothPaths(['-f', manifest, '--server', `http://127.0.0.1:${(hangUp.address() as AddressInfo).port}`]);
        assert.match(closed.stderr, /cannot reach the controller at .*\(ECONNRESET\)/);
      } finally {
        await closeServer(hangUp);
      }
    });

    it('a redirect is an answer like any other (the controller never sends one): the same error on both paths, nothing followed', async function () {
      const target = await recordingServer(() => ({ status: 200, body: answer }));
      const moved = await recordingServer(() => ({ status: 307, headers: { location: `${target.url}/clonesets` } }));
      try {
        const run = await bothPaths(['-f', manifest, '--server', moved.url]);
        assert.equal(run.code, 1);
        assert.match(run.stderr, /PUT \/clonesets: HTTP 307/);
        assert.deepEqual(target.received, [], 'not followed');
      } finally {
        await closeServer(target.server);
        await closeServer(moved.server);
      }
    });

    it('anything else reaches the full CLI: an unknown flag, --help, LAZYPULL_DEBUG', async function () {
      const api = await recordingServer(() => ({ status: 200, body: answer }));
      try {
        const unknown = await apply(['-f', manifest, '--server', api.url, '--dry-run']);
        assert.equal(unknown.bundle, true);
        assert.equal(unknown.code, 1);
        assert.match(unknown.stderr, /^error: unknown option '--dry-run'/);
        const help = await apply(['--help']);
        assert.equal(help.bundle, true);
        assert.match(help.stdout, /^Usage: lazypull rollout apply \[options\]/);
        const debug = await apply(['-f', manifest, '--server', api.url], { env: { LAZYPULL_DEBUG: '1' } });
        assert.equal(debug.bundle, true, 'LAZYPULL_DEBUG: the CLI prints its stacks');
        assert.equal(api.received.length, 1, 'only the last run reached the server');
      } finally {
        await closeServer(api.server);
      }
    });

    it('a server URL with credentials is refused on both paths, the credentials hidden, nothing sent', async function () {
      const api = await recordingServer(() => ({ status: 200, body: answer }));
      try {
        const port = new URL(api.url).port;
        const secret = await bothPaths(['-f', manifest, '--server', `http://admin:hunter2@127.0.0.1:${port}`]);
        assert.equal(secret.code, 1);
        assert.doesNotMatch(secret.stderr, /hunter2/);
        assert.match(secret.stderr, /http:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:\d+ must not carry credentials/);
        assert.deepEqual(api.received, []);
      } finally {
        await closeServer(api.server);
      }
    });
  });

  describe("the built CLI against the controller's HTTP API", function () {
    let dir: string;
    let store: StateStore;
    let api: HttpApi;
    const set = (replicas: number): string => cloneSetYaml({ name: 'thin', replicas, image: '127.0.0.1:1/app:v1', sidecarImage: '127.0.0.1:1/sidecar:v1' });

    before(async function () {
      dir = mkdtempSync(join(tmpdir(), 'lzp-thin-apply-api-'));
      store = StateStore.open(join(dir, 'store'));
      api = await startHttpApi(new Controller({ runtime: podlessRuntime(), store }), '127.0.0.1:0');
    });
    after(async function () {
      await api?.close();
      await store?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('created, then configured, with the revision the controller computed', async function () {
      const file = join(dir, 'thin.yaml');
      writeFileSync(file, set(2));
      const created = await apply(['-f', file, '--server', api.url, '--json']);
      assert.equal(created.bundle, false);
      assert.equal(created.code, 0, created.stderr);
      const first = JSON.parse(created.stdout) as { name: string; updateRevision: string; generation: number; created: boolean };
      assert.deepEqual({ ...first, updateRevision: undefined }, { name: 'thin', updateRevision: undefined, generation: 1, created: true });
      const configured = await bothPaths(['-f', file, '--server', api.url]);
      assert.equal(configured.stdout, `cloneset.apps.kruise.io/thin configured (revision ${first.updateRevision})\n`);
    });

    it("a manifest the controller refuses: its message names the field, exit code 1, as the full CLI's", async function () {
      const file = join(dir, 'bad.yaml');
      writeFileSync(file, set(-1));
      const refused = await bothPaths(['-f', file, '--server', api.url]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /^lazypull: .*spec\.replicas.* \[LAZYPULL_ERR_INVALID_ARGUMENT\]\n$/);
    });
  });
});
