/**
 * `lazypull mount REF LAYER_DIGEST MOUNTPOINT`: serve one eStargz layer of
 * an image over FUSE in the foreground until SIGINT/SIGTERM, reading file
 * bytes lazily from the registry; `lazypull mount --status MOUNTPOINT`
 * reports how much of a mounted layer is local.
 *
 * This process is the FUSE server: it never touches its own mount.
 * Events go to stderr as JSON lines; stdout gets one line once mounted.
 */
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { DiskChunkCache } from '../cache/disk-chunk-cache';
import { MemoryChunkCache } from '../cache/memory-chunk-cache';
import { TieredChunkCache } from '../cache/tiered-chunk-cache';
import { LazypullError, redact, toError } from '../errors';
import { mountLayer, mountsAt, type MountedLayer } from '../fs/fuse-mount';
import { LayerFuseOps } from '../fs/fuse-ops';
import { LayerReader } from '../fs/layer-reader';
import { PendingFuseOps } from '../fs/pending-fuse-ops';
import { warmUpLayerOpening, warmUpRegistryReads } from '../fs/warm-up';
import { DEFAULT_STATE_DIR, formatStatus, MountStatusWriter, percent, readMountStatus, statusPath, type MountStatus } from '../fs/mount-status';
import { openRemoteLayer } from '../fs/remote-layer';
import { MirroringRegistryClient } from '../registry/mirroring-client';
import { formatReference, parseReference } from '../registry/reference';
import { parseIntegerOption } from './options';
import { trace } from '../util/trace';

export const DEFAULT_CACHE_DIR = '/var/lib/lazypull/cache';
const DEFAULT_CACHE_BYTES = 10 * 1024 ** 3;
const DEFAULT_MEMORY_CACHE_BYTES = 128 * 1024 ** 2;
const DEFAULT_READ_TIMEOUT_MS = 30_000;
/** The chunk cache lists what is on disk this long after a layer server starts: not while its container starts. */
const CACHE_INDEX_AFTER_MS = 3000;

export interface MountFlags {
  /** containerd-style hosts.toml directory: registry mirrors and plain-HTTP origins. */
  hostsDir?: string;
  status?: string;
  json?: boolean;
  plainHttp?: boolean;
  /** commander's --no-background-fetch */
  backgroundFetch?: boolean;
  /** commander's --no-prefetch */
  prefetch?: boolean;
  /** commander's --no-verify */
  verify?: boolean;
  /** The layer's toc.digest annotation, when the caller knows it (the snapshotter does): no manifest fetch. */
  tocDigest?: string;
  cacheDir?: string;
  cacheSize?: string;
  memoryCacheSize?: string;
  stateDir?: string;
  readTimeout?: string;
  /** Wait, modules loaded, for one job on stdin (see StandbyJob): the snapshotter keeps one such server ready. */
  standby?: boolean;
}

/** What a standby layer server is told to serve, as one JSON document on stdin. */
export interface StandbyJob {
  ref: string;
  layerDigest: string;
  mountpoint: string;
  flags: MountFlags;
}

async function readStandbyJob(): Promise<StandbyJob | undefined> {
  const parent = process.ppid;
  let waiting = true;
  void warmUpWhileWaiting(() => waiting);
  const read = (async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8').trim();
    // EOF without a job: the snapshotter that started us went away.
    return text === '' ? undefined : (JSON.parse(text) as StandbyJob);
  })();
  // Other children of the snapshotter may hold our stdin open after it dies; re-parenting says it did.
  let timer: NodeJS.Timeout | undefined;
  const orphaned = new Promise<undefined>((resolve) => {
    timer = setInterval(() => {
      if (process.ppid !== parent) resolve(undefined);
    }, 500);
  });
  try {
    const job = await Promise.race([read, orphaned]);
    waiting = false;
    if (!job) process.stdin.destroy();
    return job;
  } finally {
    clearInterval(timer);
  }
}

/**
 * The snapshotter starts a standby server at the lowest priority; serving a
 * mount is urgent. Linux keeps a nice value per thread (threads inherit it
 * when created), so every thread of this process is set back.
 */
function restoreNormalPriority(): void {
  let threads: string[];
  try {
    threads = readdirSync('/proc/self/task');
  } catch {
    threads = [String(process.pid)];
  }
  for (const tid of threads) {
    try {
      setPriority(Number(tid), 0);
    } catch {
      // Not root, or the thread is gone: leave it.
    }
  }
}

/** Warm up the layer-opening code in short rounds, so that a job arriving meanwhile waits for one round at most. */
async function warmUpWhileWaiting(waiting: () => boolean): Promise<void> {
  for (let round = 0; round < 8 && waiting(); round++) {
    warmUpLayerOpening(1);
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (waiting()) await warmUpRegistryReads();
}

type Log = (event: Record<string, unknown>) => void;

function jsonLogger(layer: string | undefined): Log {
  return (event) => {
    const line = { time: new Date().toISOString(), ...(layer ? { layer } : {}), ...event };
    process.stderr.write(`${redact(JSON.stringify(line))}\n`);
  };
}

export async function mountCommand(
  ref: string | undefined,
  layerDigest: string | undefined,
  mountpoint: string | undefined,
  flags: MountFlags,
): Promise<void> {
  if (flags.standby) {
    const job = await readStandbyJob();
    // No job and no parent: nothing was set up, and a handle (stdin held open
    // by another of the snapshotter's children) must not keep us alive.
    if (!job) process.exit(0);
    restoreNormalPriority();
    trace('server.job');
    await mountCommand(job.ref, job.layerDigest, job.mountpoint, { ...job.flags, standby: false });
    return;
  }
  const stateDir = flags.stateDir ?? DEFAULT_STATE_DIR;
  if (flags.status !== undefined) {
    if (ref !== undefined) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', '--status takes only a mount point');
    const status = await readMountStatus(stateDir, flags.status);
    process.stdout.write(flags.json ? `${JSON.stringify(status)}\n` : formatStatus(status));
    if (!status.alive) process.exitCode = 1;
    return;
  }
  if (ref === undefined || layerDigest === undefined || mountpoint === undefined) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', 'usage: lazypull mount REF LAYER_DIGEST MOUNTPOINT (or lazypull mount --status MOUNTPOINT)');
  }
  await serveLayer(ref, layerDigest, mountpoint, flags, stateDir);
}

async function serveLayer(refText: string, layerDigest: string, mountpoint: string, flags: MountFlags, stateDir: string): Promise<void> {
  const log = jsonLogger(layerDigest);
  const readTimeoutMs = parseIntegerOption('--read-timeout', flags.readTimeout) ?? DEFAULT_READ_TIMEOUT_MS;
  const cacheBytes = parseIntegerOption('--cache-size', flags.cacheSize) ?? DEFAULT_CACHE_BYTES;
  const memoryBytes = parseIntegerOption('--memory-cache-size', flags.memoryCacheSize) ?? DEFAULT_MEMORY_CACHE_BYTES;
  const cacheDir = flags.cacheDir ?? DEFAULT_CACHE_DIR;
  const ref = parseReference(refText);

  // A signal during setup is honoured as soon as there is something to tear down.
  let stopRequested: string | undefined;
  let shutdown: ((reason: string) => void) | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (shutdown) shutdown(signal);
    else stopRequested = signal;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // An unexpected error while serving: log it, then unmount and exit non-zero.
  const onFatal = (value: unknown): void => {
    log({ event: 'fatal', error: toError(value).message });
    process.exitCode = 1;
    onSignal('SIGTERM');
  };
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);

  const client = new MirroringRegistryClient({ plainHttp: flags.plainHttp === true, hostsDir: flags.hostsDir });
  let mounted: MountedLayer | undefined;
  let statusWriter: MountStatusWriter | undefined;
  let reader: LayerReader | undefined;
  let cache: TieredChunkCache | undefined;
  try {
    // The mount, the chunk cache and the TOC are independent: the mount's
    // syscalls and the cache's listing run while the TOC is on its way.
    // Requests wait for the layer (PendingFuseOps); nobody learns of the
    // mount before the TOC is verified.
    const pendingOps = new PendingFuseOps();
    const mounting = mountLayer(mountpoint, pendingOps, { log });
    mounting.then(() => trace('server.fuse-mounted'), () => undefined);
    const cacheOpening = DiskChunkCache.open(cacheDir, cacheBytes, { indexAfterMs: CACHE_INDEX_AFTER_MS });
    const [layerOpened, mountDone, cacheOpened] = await Promise.allSettled([
      openRemoteLayer({ client, ref, layerDigest, verifyTocDigest: flags.verify !== false, tocDigest: flags.tocDigest, label: layerDigest }),
      mounting,
      cacheOpening,
    ]);
    if (mountDone.status === 'fulfilled') mounted = mountDone.value;
    if (layerOpened.status === 'rejected') {
      pendingOps.fail();
      throw layerOpened.reason;
    }
    if (mountDone.status === 'rejected') throw mountDone.reason;
    if (cacheOpened.status === 'rejected') throw cacheOpened.reason;
    const layer = layerOpened.value;
    const mountedLayer = mountDone.value;
    trace('server.toc-loaded');
    log({
      event: 'toc_loaded',
      reference: formatReference(ref),
      tocDigest: layer.tocDigest,
      verified: layer.verified,
      inodes: layer.index.inodes.size,
      dataBytes: layer.index.dataSize,
      blobSize: layer.blob.size,
    });
    cache = new TieredChunkCache(new MemoryChunkCache(memoryBytes), cacheOpened.value, {
      onWriteError: (digest, error) => log({ event: 'cache_write_failed', digest, error: error.message }),
    });
    reader = new LayerReader(layer.index, layer.blob, { label: layerDigest, cache, readTimeoutMs, log });
    const ops = new LayerFuseOps(layer.index, reader, { readTimeoutMs: readTimeoutMs + 2000, log });
    trace('server.reader-ready');
    if (stopRequested) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `interrupted by ${stopRequested} before the layer was served`);
    pendingOps.ready(ops);
    trace('server.mounted');

    const startedAt = new Date().toISOString();
    let prefetchState: MountStatus['prefetch'] = layer.index.prefetchEnd !== undefined && flags.prefetch !== false ? 'running' : 'none';
    let backgroundState: MountStatus['backgroundFetch'] = flags.backgroundFetch === false ? 'disabled' : 'waiting';
    const activeReader = reader;
    const snapshot = (): MountStatus => {
      const s = activeReader.stats();
      if (backgroundState === 'running' && s.localBytes >= s.totalBytes) backgroundState = 'done';
      return {
        mountpoint: mountedLayer.mountpoint,
        pid: process.pid,
        reference: formatReference(ref),
        layer: layerDigest,
        tocDigest: layer.tocDigest,
        verified: layer.verified,
        startedAt,
        updatedAt: new Date().toISOString(),
        prefetch: prefetchState,
        backgroundFetch: backgroundState,
        totalBytes: s.totalBytes,
        localBytes: s.localBytes,
        fetchedBytes: s.fetchedBytes,
        requests: s.requests,
        verifyFailures: s.verifyFailures,
        percentLocal: percent(s.localBytes, s.totalBytes),
        reads: ops.counters.reads,
        readErrors: ops.counters.readErrors,
        blobSize: layer.blob.size,
        cacheHits: s.cacheHits,
        cacheMisses: s.cacheMisses,
        fetchSeconds: s.fetchSeconds,
      };
    };
    statusWriter = new MountStatusWriter(statusPath(stateDir, mountedLayer.mountpoint), snapshot);
    await statusWriter.start();
    trace('server.status-written');

    const message = `mounted ${layerDigest} of ${formatReference(ref)} at ${mountedLayer.mountpoint}`;
    process.stdout.write(flags.json ? `${JSON.stringify({ event: 'mounted', mountpoint: mountedLayer.mountpoint, layer: layerDigest, pid: process.pid, status: statusWriter.path })}\n` : `${message}\n`);

    let shutdownStarted = false;
    // Prefetch the landmark's range (after the message: its start-up work
    // would delay the snapshotter's commit), then fetch the rest in the
    // background unless told not to.
    const prefetch = prefetchState === 'running' ? activeReader.prefetch() : Promise.resolve();
    if (prefetchState === 'running') mountedLayer.warmKernelCache(ops.startup.paths, activeReader.prefetching);
    void prefetch
      .then(
        () => {
          if (prefetchState === 'running') prefetchState = 'done';
        },
        (err: unknown) => {
          prefetchState = 'failed';
          log({ event: 'prefetch_failed', error: toError(err).message });
        },
      )
      .then(() => {
        if (backgroundState !== 'waiting' || shutdownStarted) return;
        backgroundState = 'running';
        activeReader.startBackgroundFetch();
      });

    const finished = new Promise<void>((resolveFinished) => {
      shutdown = (reason: string) => {
        if (shutdownStarted) return;
        shutdownStarted = true;
        log({ event: 'shutdown', reason });
        if (backgroundState === 'running' || backgroundState === 'waiting') backgroundState = 'stopped';
        resolveFinished();
      };
    });
    if (stopRequested) shutdown!(stopRequested);
    // A mount someone else removed (umount -l, a crashed runtime cleaning up) leaves nothing to serve.
    const mountedAt = mountedLayer.mountpoint;
    const watchdog = setInterval(() => {
      void mountsAt(mountedAt).then((found) => {
        if (found.length === 0) shutdown?.('mount point unmounted from outside');
      }, () => undefined);
    }, 2000);
    watchdog.unref();
    await finished;
    clearInterval(watchdog);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
    // Teardown in reverse order; a second signal now would kill us mid-unmount, so ignore it.
    const ignore = (): void => undefined;
    process.on('SIGINT', ignore);
    process.on('SIGTERM', ignore);
    await teardown({ mounted, reader, statusWriter, cache, client, log });
  }
  // Any handle someone forgot must not keep a finished mount process alive.
  setTimeout(() => process.exit(), 1000).unref();
}

async function teardown(parts: {
  mounted?: MountedLayer;
  reader?: LayerReader;
  statusWriter?: MountStatusWriter;
  cache?: TieredChunkCache;
  client: { close(): Promise<void> };
  log: Log;
}): Promise<void> {
  const step = async (what: string, fn: () => Promise<unknown> | undefined): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      parts.log({ event: 'teardown_failed', step: what, error: toError(err).message });
      process.exitCode = 1;
    }
  };
  await step('stop background fetch', () => parts.reader?.stopBackgroundFetch());
  await step('unmount', () => parts.mounted?.unmount());
  await step('remove status', () => parts.statusWriter?.stop(true));
  await step('flush cache', () => parts.cache?.flush());
  await step('close registry client', () => parts.client.close());
}
