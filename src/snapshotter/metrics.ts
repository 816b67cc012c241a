/**
 * Prometheus metrics of the snapshotter daemon on an optional HTTP
 * address. Request counts and latencies are observed in the daemon; the
 * per-layer numbers (bytes fetched, local, total, reads, errors, cache hits)
 * and the fetch latency histogram come from the status files the layer
 * servers keep, read at scrape time.
 */
import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { Counter, Gauge, Histogram, Registry, type Metric } from 'prom-client';
import type { MountStatus } from '../fs/mount-status';
import { cumulativeBuckets, isHistogramData } from '../util/latency-histogram';

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'code'>;
  private readonly latency: Histogram<'method'>;
  readonly remoteMounts: Counter<'result'>;

  constructor(stateDir: string) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'lazypull_snapshot_requests_total', help: 'Snapshots API requests by method and result code', labelNames: ['method', 'code'], registers });
    this.latency = new Histogram({ name: 'lazypull_snapshot_request_seconds', help: 'Snapshots API request latency', labelNames: ['method'], registers, buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30] });
    this.remoteMounts = new Counter({ name: 'lazypull_remote_mounts_total', help: 'Attempts to serve a layer lazily, by result (mounted, fallback)', labelNames: ['result'], registers });
    const layerGauge = (name: string, help: string, field: keyof MountStatus): Gauge<'layer'> =>
      new Gauge({
        name, help, labelNames: ['layer'], registers,
        collect: async function (this: Gauge<'layer'>) {
          this.reset();
          for (const s of await readStatuses(stateDir)) this.set({ layer: s.layer }, Number(s[field]) || 0);
        },
      });
    layerGauge('lazypull_layer_fetched_bytes', 'Compressed bytes fetched from the registry by the layer server', 'fetchedBytes');
    layerGauge('lazypull_layer_local_bytes', 'Bytes of the layer\'s file data in the local cache', 'localBytes');
    layerGauge('lazypull_layer_total_bytes', 'Bytes of file data in the layer', 'totalBytes');
    layerGauge('lazypull_layer_fetch_requests', 'Registry range requests made for the layer', 'requests');
    layerGauge('lazypull_layer_cache_hits', 'Chunks the layer server\'s reads found in the chunk cache', 'cacheHits');
    layerGauge('lazypull_layer_cache_misses', 'Chunks the layer server\'s reads fetched from the registry', 'cacheMisses');
    this.registry.registerMetric(fetchSecondsMetric(stateDir) as unknown as Metric);
    layerGauge('lazypull_layer_reads', 'FUSE reads served (from cache or after a fetch)', 'reads');
    layerGauge('lazypull_layer_read_errors', 'FUSE reads answered with EIO', 'readErrors');
    layerGauge('lazypull_layer_verify_failures', 'Chunks that failed digest verification', 'verifyFailures');
    new Gauge({
      name: 'lazypull_mounted_layers', help: 'Layers currently served lazily', registers,
      collect: async function (this: Gauge) {
        this.set((await readStatuses(stateDir)).length);
      },
    });
  }

  observe(method: string, code: string, seconds: number): void {
    this.requests.inc({ method, code });
    this.latency.observe({ method }, seconds);
  }

  /** Serve /metrics on "host:port". */
  async listen(address: string): Promise<Server> {
    const colon = address.lastIndexOf(':');
    const host = address.slice(0, colon) || '127.0.0.1';
    const port = Number(address.slice(colon + 1));
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }
}

/**
 * `lazypull_fetch_seconds`: the registry range reads of every layer served
 * now, as one histogram. The layer servers time their reads and keep the
 * counts in their status files (they are other processes); this sums them
 * at scrape time, so prom-client's own Histogram (observed in-process) does
 * not fit: it is registered as a metric object of our own.
 */
function fetchSecondsMetric(stateDir: string): { name: string; help: string; type: 'histogram'; get(): Promise<unknown>; reset(): void } {
  const name = 'lazypull_fetch_seconds';
  const help = 'Latency of registry range reads for lazily served layers, from request to last byte';
  return {
    name,
    help,
    type: 'histogram',
    reset: () => undefined,
    async get() {
      const histograms = (await readStatuses(stateDir)).map((s) => s.fetchSeconds).filter(isHistogramData);
      const { buckets, sum, count } = cumulativeBuckets(histograms);
      return {
        name,
        help,
        type: 'histogram',
        aggregator: 'sum',
        values: [
          ...buckets.map(([le, value]) => ({ metricName: `${name}_bucket`, labels: { le }, value })),
          { metricName: `${name}_sum`, labels: {}, value: sum },
          { metricName: `${name}_count`, labels: {}, value: count },
        ],
      };
    },
  };
}

async function readStatuses(stateDir: string): Promise<MountStatus[]> {
  const dir = join(stateDir, 'mounts');
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const out: MountStatus[] = [];
  for (const name of names) {
    if (!name.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(await fs.readFile(join(dir, name), 'utf8')) as MountStatus);
    } catch {
      // being rewritten or removed right now
    }
  }
  return out;
}
