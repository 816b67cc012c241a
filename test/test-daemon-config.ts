/** The snapshotter daemon's configuration (TOML + flags) and its metrics endpoint. */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, resolveConfig } from '../src/snapshotter/daemon-config';
import { DaemonMetrics } from '../src/snapshotter/metrics';
import { LatencyHistogram } from '../src/util/latency-histogram';
import { freePort } from '../src/sandbox/free-port';
import { startLocalSnapshotter, type LocalSnapshotter } from '../src/sandbox/local-snapshotter';
import { requireRoot } from './support/require-env';

describe('snapshotter daemon configuration', function () {
  let dir: string;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'lzp-daemon-config-'));
  });

  after(async function () {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('runs on defaults when the default config file is absent', function () {
    const config = resolveConfig({ config: undefined });
    assert.deepEqual(config, { ...defaultConfig(), ...config });
    assert.equal(config.requireTocDigest, true);
  });

  it('reads the TOML file and lets flags override it', async function () {
    const file = join(dir, 'config.toml');
    await writeFile(file, [
      'root = "/srv/lazypull"',
      'cache_size = 1048576',
      'background_fetch = true',
      'plain_http_registries = ["10.0.0.1:5000"]',
      'log_level = "warn"',
      'metrics_address = "127.0.0.1:9999"',
    ].join('\n'));
    const fromFile = resolveConfig({ config: file });
    assert.equal(fromFile.root, '/srv/lazypull');
    assert.equal(fromFile.cacheSize, 1048576);
    assert.equal(fromFile.logLevel, 'warn');
    const flagged = resolveConfig({ config: file, root: '/tmp/x', backgroundFetch: false, plainHttpRegistry: ['127.0.0.1:5001'], logLevel: 'debug' });
    assert.equal(flagged.root, '/tmp/x');
    assert.equal(flagged.cacheDir, '/tmp/x/cache', 'a private root keeps its cache inside');
    assert.equal(flagged.backgroundFetch, false);
    assert.deepEqual(flagged.plainHttpRegistries, ['10.0.0.1:5000', '127.0.0.1:5001']);
    assert.equal(flagged.logLevel, 'debug');
  });

  it('refuses unknown keys, wrong types and a missing explicit file, naming the file and key', async function () {
    const bad = join(dir, 'bad.toml');
    await writeFile(bad, 'roots = "/x"\n');
    assert.throws(() => resolveConfig({ config: bad }), /bad\.toml: unknown key "roots"/);
    await writeFile(bad, 'cache_size = "big"\n');
    assert.throws(() => resolveConfig({ config: bad }), /"cache_size" must be a number/);
    await writeFile(bad, 'log_level = "loud"\n');
    assert.throws(() => resolveConfig({ config: bad }), /log_level/);
    await writeFile(bad, 'root = [\n');
    assert.throws(() => resolveConfig({ config: bad }), /invalid TOML/);
    assert.throws(() => resolveConfig({ config: join(dir, 'missing.toml') }), /missing\.toml: cannot read/);
  });
});

describe('snapshotter daemon metrics', function () {
  let dir: string;
  let snapshotter: LocalSnapshotter | undefined;
  let address: string;

  before(async function () {
    requireRoot(this);
    dir = await mkdtemp(join(tmpdir(), 'lzp-daemon-metrics-'));
    address = `127.0.0.1:${await freePort()}`;
    snapshotter = await startLocalSnapshotter({ dir, metricsAddress: address });
  });

  after(async function () {
    await snapshotter?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves Prometheus metrics over HTTP and logs JSON lines', async function () {
    const res = await fetch(`http://${address}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    for (const name of ['lazypull_snapshot_requests_total', 'lazypull_snapshot_request_seconds', 'lazypull_remote_mounts_total', 'lazypull_mounted_layers', 'lazypull_layer_fetched_bytes', 'lazypull_fetch_seconds_bucket{le="+Inf"} 0', 'lazypull_layer_cache_hits']) {
      assert.ok(text.includes(name), `metrics include ${name}`);
    }
    assert.equal((await fetch(`http://${address}/other`)).status, 404);
    const { readFile } = await import('node:fs/promises');
    const lines = (await readFile(snapshotter!.logPath, 'utf8')).split('\n').filter(Boolean);
    assert.ok(lines.length > 0);
    for (const line of lines) {
      const event = JSON.parse(line) as { time: string; level: string };
      assert.ok(event.time && event.level, line);
    }
  });
});

describe('snapshotter daemon metrics from the layer servers\' status files', function () {
  let dir = '';

  after(async function () {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('sums every layer\'s fetch latencies into lazypull_fetch_seconds and reports cache hits per layer', async function () {
    dir = await mkdtemp(join(tmpdir(), 'lzp-metrics-status-'));
    const mounts = join(dir, 'mounts');
    await mkdir(mounts, { recursive: true });
    const status = (layer: string, extra: Record<string, unknown>): string => JSON.stringify({ layer, mountpoint: `/mnt/${layer}`, pid: 1, fetchedBytes: 10, ...extra });
    const a = new LatencyHistogram();
    for (const s of [0.002, 0.004, 0.03, 0.2]) a.observe(s);
    const b = new LatencyHistogram();
    for (const s of [0.007, 40]) b.observe(s);
    await writeFile(join(mounts, 'a.json'), status('sha256:aa', { cacheHits: 5, cacheMisses: 2, fetchSeconds: a.data() }));
    await writeFile(join(mounts, 'b.json'), status('sha256:bb', { cacheHits: 1, cacheMisses: 9, fetchSeconds: b.data() }));
    // A server of an older version: no histogram, no cache counters.
    await writeFile(join(mounts, 'c.json'), status('sha256:cc', {}));
    // Other bucket bounds are left out, not mixed in.
    await writeFile(join(mounts, 'd.json'), status('sha256:dd', { fetchSeconds: new LatencyHistogram([1, 2]).data() }));

    const text = await new DaemonMetrics(dir).registry.metrics();
    const value = (line: string): number => {
      const found = text.split('\n').find((l) => l.startsWith(`${line} `));
      assert.ok(found, `no "${line}" in:\n${text}`);
      return Number(found.slice(line.length + 1));
    };
    assert.match(text, /# TYPE lazypull_fetch_seconds histogram/);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="0.005"}'), 2);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="0.01"}'), 3);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="0.05"}'), 4);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="0.25"}'), 5);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="30"}'), 5);
    assert.equal(value('lazypull_fetch_seconds_bucket{le="+Inf"}'), 6);
    assert.equal(value('lazypull_fetch_seconds_count'), 6);
    assert.ok(Math.abs(value('lazypull_fetch_seconds_sum') - 40.243) < 1e-9);
    assert.equal(value('lazypull_layer_cache_hits{layer="sha256:aa"}'), 5);
    assert.equal(value('lazypull_layer_cache_misses{layer="sha256:bb"}'), 9);
    assert.equal(value('lazypull_layer_cache_hits{layer="sha256:cc"}'), 0);
  });
});
