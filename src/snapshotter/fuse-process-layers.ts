/**
 * Remote layers served by one `lazypull mount` process per layer.
 *
 * Why processes: a FUSE server must never share an event loop with code
 * that blocks on its mount, and detached processes outlive the snapshotter.
 * When the daemon restarts (cleanly or after `kill -9`), running
 * containers keep reading their layers; on start-up the daemon adopts the
 * mounts that are still served and starts new servers for the others.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, promises as fs } from 'node:fs';
import { setPriority } from 'node:os';
import { dirname, join } from 'node:path';
import type { MountFlags, StandbyJob } from '../cli/mount-command';
import { cleanStaleMount, mountsAt } from '../fs/fuse-mount';
import { readMountStatus, statusPath } from '../fs/mount-status';
import { TOC_DIGEST_ANNOTATION } from '../format/toc';
import { parseReference } from '../registry/reference';
import type { Logger } from '../util/json-log';
import type { RemoteLayerSource } from './metadata-store';
import type { RemoteLayers } from './snapshotter';
import { isProcessAlive as alive } from '../util/process-alive';
import { trace } from '../util/trace';
import { watchFolder } from '../util/watch-folder';

/** Labels that say which layer to mount: CRI's, and the ones `lazypull pull` sets. */
export const LABEL_CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
export const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
export const LABEL_IMAGE_REF = 'containerd.io/snapshot/lazypull.image-ref';
export const LABEL_LAYER_DIGEST = 'containerd.io/snapshot/lazypull.layer-digest';
/** CRI: digests of this layer and the ones after it, comma-separated (possibly cut short). */
export const LABEL_CRI_IMAGE_LAYERS = 'containerd.io/snapshot/cri.image-layers';

/** Niceness of a waiting standby layer server (the lowest priority). */
const STANDBY_NICENESS = 19;
/**
 * Node.js flags of a layer server: a young generation that starts at 16 MB
 * (V8 starts it at 1 MB and shrinks it again while a standby server waits),
 * so that indexing a TOC, which makes some 10 objects per file, runs with
 * few scavenges (first TOC of a 8,000-file layer after an idle wait: read
 * and indexed in 52 ms instead of 68, median of 10).
 */
const LAYER_SERVER_NODE_FLAGS = ['--min-semi-space-size=16', '--max-semi-space-size=32'];
/** How long after the last mount the next standby layer server starts. */
const STANDBY_RESPAWN_QUIET_MS = 2000;
/** How often a mount's status is read when no change in the status folder woke the wait. */
const STATUS_POLL_MS = 50;

export interface FuseProcessLayersOptions {
  /** The lazypull CLI entry point (dist/src/cli/main.js). */
  cliPath: string;
  stateDir: string;
  cacheDir: string;
  cacheSize: number;
  memoryCacheSize: number;
  logDir: string;
  prefetch: boolean;
  backgroundFetch: boolean;
  requireTocDigest: boolean;
  plainHttpRegistries: string[];
  hostsDir?: string;
  /** How long a mount may take to come up (TOC fetch included). */
  mountTimeoutMs?: number;
  log: Logger;
}

/** The image reference and layer digest a Prepare's labels name, if they name one. */
export function layerFromLabels(labels: Record<string, string>): { imageRef: string; layerDigest: string } | undefined {
  const imageRef = labels[LABEL_IMAGE_REF] ?? labels[LABEL_CRI_IMAGE_REF];
  const layerDigest = labels[LABEL_LAYER_DIGEST] ?? labels[LABEL_CRI_LAYER_DIGEST];
  if (!imageRef || !layerDigest) return undefined;
  return { imageRef, layerDigest };
}


/** Command-line flags for a fresh layer server with the same settings. */
function mountArgv(f: MountFlags): string[] {
  const argv = ['--json', '--state-dir', f.stateDir!, '--cache-dir', f.cacheDir!, '--cache-size', f.cacheSize!, '--memory-cache-size', f.memoryCacheSize!];
  if (f.backgroundFetch === false) argv.push('--no-background-fetch');
  if (f.prefetch === false) argv.push('--no-prefetch');
  if (f.verify === false) argv.push('--no-verify');
  if (f.tocDigest) argv.push('--toc-digest', f.tocDigest);
  if (f.hostsDir) argv.push('--hosts-dir', f.hostsDir);
  if (f.plainHttp) argv.push('--plain-http');
  return argv;
}

export class FuseProcessLayers implements RemoteLayers {
  private standby: ChildProcess | undefined;
  private standbyTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: FuseProcessLayersOptions) {
    this.ensureStandby();
  }

  layerKey(labels: Record<string, string>): string | undefined {
    const layer = layerFromLabels(labels);
    return layer ? `${layer.imageRef} ${layer.layerDigest}` : undefined;
  }

  upcoming(labels: Record<string, string>): Array<Record<string, string>> {
    const layer = layerFromLabels(labels);
    const list = (labels[LABEL_CRI_IMAGE_LAYERS] ?? '').split(',').map((d) => d.trim()).filter(Boolean);
    const at = layer ? list.indexOf(layer.layerDigest) : -1;
    if (!layer || at < 0) return [];
    return list.slice(at + 1).map((digest) => ({
      [LABEL_CRI_IMAGE_REF]: layer.imageRef,
      [LABEL_CRI_LAYER_DIGEST]: digest,
      [LABEL_CRI_IMAGE_LAYERS]: list.slice(list.indexOf(digest)).join(','),
    }));
  }

  async mount(labels: Record<string, string>, mountpoint: string, opts: { ahead?: boolean } = {}): Promise<RemoteLayerSource | undefined> {
    const layer = layerFromLabels(labels);
    if (!layer) return undefined;
    trace('snapshotter.mount-start');
    const tocDigest = labels[TOC_DIGEST_ANNOTATION];
    // Without the annotation the TOC cannot be verified: let containerd pull the layer instead.
    // (A layer mounted ahead has no labels yet; its server checks the manifest's annotation itself.)
    if (!tocDigest && this.opts.requireTocDigest && !opts.ahead) {
      this.opts.log({ level: 'info', event: 'remote_layer_skipped', layer: layer.layerDigest, reason: 'no TOC digest annotation' });
      return undefined;
    }
    if (!(await this.spawnServer({ ...layer, tocDigest }, mountpoint))) return undefined;
    trace('snapshotter.mounted');
    // The TOC digest the server verified, for restarts and for matching a later Prepare.
    const verified = await readMountStatus(this.opts.stateDir, mountpoint).then((st) => st.tocDigest, () => tocDigest);
    return { ...layer, tocDigest: verified ?? tocDigest };
  }

  async remount(source: RemoteLayerSource, mountpoint: string): Promise<void> {
    if (await this.served(mountpoint)) {
      this.opts.log({ level: 'info', event: 'remote_layer_adopted', layer: source.layerDigest, mountpoint });
      return;
    }
    await cleanStaleMount(mountpoint);
    await fs.mkdir(mountpoint, { recursive: true });
    if (!(await this.spawnServer(source, mountpoint))) {
      throw new Error(`could not mount ${source.layerDigest} of ${source.imageRef} again`);
    }
  }

  /** A live server still answers for this mount point. */
  private async served(mountpoint: string): Promise<boolean> {
    try {
      const status = await readMountStatus(this.opts.stateDir, mountpoint);
      return status.alive && alive(status.pid) && (await mountsAt(mountpoint)).length > 0;
    } catch {
      return false;
    }
  }

  async unmount(mountpoint: string): Promise<void> {
    let pid: number | undefined;
    try {
      pid = (await readMountStatus(this.opts.stateDir, mountpoint)).pid;
    } catch {
      pid = undefined;
    }
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 10_000;
      while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    await cleanStaleMount(mountpoint);
  }

  /** How every layer server is configured (the same for a fresh process and a standby one). */
  private flagsFor(source: RemoteLayerSource): MountFlags {
    const o = this.opts;
    return {
      json: true,
      stateDir: o.stateDir,
      cacheDir: o.cacheDir,
      cacheSize: String(o.cacheSize),
      memoryCacheSize: String(o.memoryCacheSize),
      backgroundFetch: o.backgroundFetch,
      prefetch: o.prefetch,
      verify: o.requireTocDigest || source.tocDigest !== undefined,
      tocDigest: source.tocDigest,
      hostsDir: o.hostsDir,
      plainHttp: o.plainHttpRegistries.includes(parseReference(source.imageRef).registry),
    };
  }

  private logFile(name: string): number {
    mkdirSync(this.opts.logDir, { recursive: true });
    return openSync(join(this.opts.logDir, `${name.replace(/[^a-z0-9]/gi, '_')}-${Date.now()}.log`), 'a');
  }

  /**
   * Keep one layer server started and waiting, modules loaded, so that a
   * mount does not wait for a Node.js start-up. It reads its job on stdin
   * and exits when stdin closes without one (this daemon went away).
   */
  private ensureStandby(): void {
    if (this.standby && this.standby.exitCode === null && this.standby.signalCode === null) return;
    const logFd = this.logFile('standby');
    const child = spawn(process.execPath, [...LAYER_SERVER_NODE_FLAGS, this.opts.cliPath, 'mount', '--standby'], { detached: true, stdio: ['pipe', logFd, logFd] });
    closeSync(logFd);
    child.on('error', () => undefined);
    child.stdin!.on('error', () => undefined);
    (child.stdin as unknown as { unref?(): void }).unref?.();
    child.unref();
    // Its start-up and warm-up must not take CPU from the mounts and containers starting meanwhile:
    // it runs at the lowest priority until it gets a job (then it raises its own).
    if (child.pid !== undefined) {
      try {
        setPriority(child.pid, STANDBY_NICENESS);
      } catch {
        // Not allowed to: it simply competes at normal priority.
      }
    }
    this.standby = child;
  }

  /**
   * Start the next standby once no layer has been mounted for a while.
   * Not at once: a container usually starts on the layers just mounted, and
   * a Node.js start-up beside it, even at the lowest priority, delays its
   * first output by tens of milliseconds on a small node (measured: python3
   * on 2 cores, 0.20 s with it, 0.16 s without). Layers mounted back to
   * back meanwhile get fresh servers, which costs them little: a standby
   * started after the previous mount would have had only milliseconds to
   * load.
   */
  private scheduleStandby(): void {
    clearTimeout(this.standbyTimer);
    this.standbyTimer = setTimeout(() => {
      this.standbyTimer = undefined;
      this.ensureStandby();
    }, STANDBY_RESPAWN_QUIET_MS);
    this.standbyTimer.unref();
  }

  /** A fresh layer server, or the standby one given its job. */
  private startServer(source: RemoteLayerSource, mountpoint: string): ChildProcess {
    const flags = this.flagsFor(source);
    const standby = this.standby;
    this.standby = undefined;
    let child: ChildProcess;
    if (standby && standby.exitCode === null && standby.signalCode === null && standby.stdin?.writable) {
      const job: StandbyJob = { ref: source.imageRef, layerDigest: source.layerDigest, mountpoint, flags };
      // Back to normal priority before it is handed the job: at the lowest, while the pull keeps containerd and this
      // daemon busy, it took ~35 ms to be scheduled to read it. (Its main thread; it raises its other threads itself.)
      if (standby.pid !== undefined) {
        try {
          setPriority(standby.pid, 0);
        } catch {
          // Not allowed to: it raises its own priority once it has read the job.
        }
      }
      standby.stdin.end(JSON.stringify(job));
      child = standby;
    } else {
      const logFd = this.logFile(source.layerDigest);
      child = spawn(process.execPath, [...LAYER_SERVER_NODE_FLAGS, this.opts.cliPath, 'mount', source.imageRef, source.layerDigest, mountpoint, ...mountArgv(flags)], {
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
      closeSync(logFd);
      child.unref();
    }
    return child;
  }

  /** Start a detached server and wait until its mount is up (status file + mount table), or it fails. */
  private async spawnServer(source: RemoteLayerSource, mountpoint: string): Promise<boolean> {
    const { log } = this.opts;
    // Output goes to a file, never a pipe: the server outlives this process and must not die of EPIPE.
    const child = this.startServer(source, mountpoint);
    let exited = child.exitCode !== null || child.signalCode !== null;
    child.once('exit', (code) => {
      exited = true;
      log({ level: code === 0 ? 'info' : 'warn', event: 'remote_mount_exited', layer: source.layerDigest, code, pid: child.pid });
    });
    child.once('error', () => {
      exited = true;
    });
    // The server announces its mount by renaming its status file into place: woken by that (inotify), the mount
    // is answered the moment it is up; the timer is the fallback where the folder cannot be watched.
    const statusFolder = dirname(statusPath(this.opts.stateDir, mountpoint));
    mkdirSync(statusFolder, { recursive: true });
    const changes = watchFolder(statusFolder);
    try {
      const deadline = Date.now() + (this.opts.mountTimeoutMs ?? 60_000);
      while (!exited && Date.now() < deadline) {
        if (await this.served(mountpoint)) return true;
        await changes.next(STATUS_POLL_MS);
      }
    } finally {
      changes.close();
      this.scheduleStandby();
    }
    if (!exited) {
      log({ level: 'warn', event: 'remote_mount_timeout', layer: source.layerDigest, mountpoint, pid: child.pid });
      child.kill('SIGTERM');
    }
    await cleanStaleMount(mountpoint).catch(() => undefined);
    return false;
  }
}
