/**
 * Remote layers served by one `lazypull mount` process per layer.
 *
 * Why processes: a FUSE server must never share an event loop with code
 * that blocks on its mount, and detached processes outlive the snapshotter.
 * When the daemon restarts (cleanly or after `kill -9`), running
 * containers keep reading their layers; on start-up the daemon adopts the
 * mounts that are still served and starts new servers for the others.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { cleanStaleMount, mountsAt } from '../fs/fuse-mount';
import { readMountStatus } from '../fs/mount-status';
import { TOC_DIGEST_ANNOTATION } from '../format/toc';
import { parseReference } from '../registry/reference';
import type { Logger } from '../util/json-log';
import type { RemoteLayerSource } from './metadata-store';
import type { RemoteLayers } from './snapshotter';
import { isProcessAlive as alive } from '../util/process-alive';

/** Labels that say which layer to mount: CRI's, and the ones `lazypull pull` sets. */
export const LABEL_CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
export const LABEL_CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
export const LABEL_IMAGE_REF = 'containerd.io/snapshot/lazypull.image-ref';
export const LABEL_LAYER_DIGEST = 'containerd.io/snapshot/lazypull.layer-digest';
/** CRI: digests of this layer and the ones after it, comma-separated (possibly cut short). */
export const LABEL_CRI_IMAGE_LAYERS = 'containerd.io/snapshot/cri.image-layers';

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


export class FuseProcessLayers implements RemoteLayers {
  constructor(private readonly opts: FuseProcessLayersOptions) {}

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
    const tocDigest = labels[TOC_DIGEST_ANNOTATION];
    // Without the annotation the TOC cannot be verified: let containerd pull the layer instead.
    // (A layer mounted ahead has no labels yet; its server checks the manifest's annotation itself.)
    if (!tocDigest && this.opts.requireTocDigest && !opts.ahead) {
      this.opts.log({ level: 'info', event: 'remote_layer_skipped', layer: layer.layerDigest, reason: 'no TOC digest annotation' });
      return undefined;
    }
    if (!(await this.spawnServer({ ...layer, tocDigest }, mountpoint))) return undefined;
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

  private args(source: RemoteLayerSource, mountpoint: string): string[] {
    const o = this.opts;
    const args = [
      o.cliPath, 'mount', source.imageRef, source.layerDigest, mountpoint, '--json',
      '--state-dir', o.stateDir, '--cache-dir', o.cacheDir,
      '--cache-size', String(o.cacheSize), '--memory-cache-size', String(o.memoryCacheSize),
    ];
    if (!o.backgroundFetch) args.push('--no-background-fetch');
    if (!o.prefetch) args.push('--no-prefetch');
    if (!o.requireTocDigest && !source.tocDigest) args.push('--no-verify');
    if (o.hostsDir) args.push('--hosts-dir', o.hostsDir);
    const registry = parseReference(source.imageRef).registry;
    if (o.plainHttpRegistries.includes(registry)) args.push('--plain-http');
    return args;
  }

  /** Start a detached server and wait until its mount is up (status file + mount table), or it fails. */
  private async spawnServer(source: RemoteLayerSource, mountpoint: string): Promise<boolean> {
    const { log } = this.opts;
    await fs.mkdir(this.opts.logDir, { recursive: true });
    const logPath = join(this.opts.logDir, `${source.layerDigest.replace(/[^a-z0-9]/gi, '_')}-${Date.now()}.log`);
    const logFd = openSync(logPath, 'a');
    // Output goes to a file, never a pipe: the server outlives this process and must not die of EPIPE.
    const child = spawn(process.execPath, this.args(source, mountpoint), { detached: true, stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    let exited = false;
    child.once('exit', (code) => {
      exited = true;
      log({ level: code === 0 ? 'info' : 'warn', event: 'remote_mount_exited', layer: source.layerDigest, code, log: logPath });
    });
    child.once('error', () => {
      exited = true;
    });
    child.unref();
    const deadline = Date.now() + (this.opts.mountTimeoutMs ?? 60_000);
    while (!exited && Date.now() < deadline) {
      if (await this.served(mountpoint)) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    if (!exited) {
      log({ level: 'warn', event: 'remote_mount_timeout', layer: source.layerDigest, mountpoint, log: logPath });
      child.kill('SIGTERM');
    }
    await cleanStaleMount(mountpoint).catch(() => undefined);
    return false;
  }
}
