/**
 * The rollout benchmark's app image, in two versions that differ only in
 * their top layer: the cold-start benchmark's Debian bookworm minbase +
 * python3 root filesystem as the base layer, and an app layer on top
 * (/app/server.py, which marks itself ready and waits for SIGTERM,
 * /app/VERSION and, by default, the app's vendored dependencies: see
 * rollout-app-layer.ts). Both versions go to the loopback registry twice: as built
 * (plain gzip, for the overlayfs modes) and converted to eStargz by
 * `lazypull convert --prioritize` (python's start-up files and the app's).
 */
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { OciLayout } from '../src/image/oci-layout';
import { packTar } from '../src/image/pack-tar';
import { layerFromBuffers, layerFromFile, writeImage, type LayerBlob, type RunConfig } from '../src/image/write-image';
import type { LocalRegistry } from '../src/sandbox/local-registry';
import { appLayerKind, VENDOR_PYTHON_PATH, VENDOR_STARTUP_FILES, vendoredDependencies, type AppLayerKind, type VendoredDependencies } from './rollout-app-layer';
import { convertWithCli, pushImage } from './bench-util';
import { ensurePythonRootfs, prioritizedFiles, type PythonRootfs } from './python-rootfs';

export const APP_VERSIONS = ['v1', 'v2'] as const;
export type AppVersion = (typeof APP_VERSIONS)[number];

export const APP_COMMAND = ['python3', '/app/server.py'];
/** The server writes its version here once it runs: the readiness probe reads it. */
export const READY_FILE = '/tmp/ready';
export const READINESS_COMMAND = ['cat', READY_FILE];
const APP_FILES = ['/app/server.py', '/app/VERSION'];

export interface AppImages {
  rootfs: PythonRootfs;
  /** Plain gzip images (base layer as built, `gzip -6`). */
  gzip: Record<AppVersion, string>;
  estargz: Record<AppVersion, string>;
  /** Compressed bytes: base layer, and each version's top layer. */
  gzipBaseBytes: number;
  estargzBaseBytes: number;
  gzipTopBytes: number;
  estargzTopBytes: number;
  /** What the top layer holds besides the app's code, and its size unpacked. */
  appLayer: AppLayerKind;
  topTarBytes: number;
  vendoredFiles: number;
  /** Start-up paths given to --prioritize. */
  prioritized: number;
  convertSeconds: number;
}

/** PID 1 in its container: without a SIGTERM handler it would ignore the stop signal until the kill timeout. */
function serverScript(version: AppVersion, vendored: boolean): string {
  return [
    `# lazypull rollout benchmark app, ${version}`,
    'import signal, sys',
    ...(vendored ? [`sys.path.insert(0, ${JSON.stringify(VENDOR_PYTHON_PATH)})`, 'import json  # a dependency, from the app\'s own layer'] : []),
    `VERSION = ${JSON.stringify(version)}`,
    'signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))',
    `with open(${JSON.stringify(READY_FILE)}, "w") as f:`,
    '    f.write(VERSION)',
    'print("app", VERSION, "ready", flush=True)',
    'while True:',
    '    signal.pause()',
    '',
  ].join('\n');
}

async function appLayer(version: AppVersion, vendor: VendoredDependencies | undefined): Promise<{ blob: LayerBlob; tarBytes: number }> {
  const tar = await packTar([
    { header: { name: 'app/', type: 'directory', mode: 0o755 } },
    { header: { name: 'app/server.py', type: 'file', mode: 0o644 }, content: serverScript(version, vendor !== undefined) },
    { header: { name: 'app/VERSION', type: 'file', mode: 0o644 }, content: `${version}\n` },
    ...(vendor?.entries ?? []),
  ]);
  return { blob: layerFromBuffers(gzipSync(tar), tar), tarBytes: tar.length };
}

export async function prepareAppImages(work: string, registry: LocalRegistry, log: (line: string) => void): Promise<AppImages> {
  const rootfs = await ensurePythonRootfs(log);
  if (rootfs.source === 'synthetic') log(`NOTE: ${rootfs.description}`);
  const base = await layerFromFile(rootfs.layerPath);
  const run: RunConfig = { cmd: APP_COMMAND, workingDir: '/app' };
  const layout = join(work, 'app-oci');
  const kind = appLayerKind();
  const vendor = kind === 'vendored' ? await vendoredDependencies(rootfs.layerPath) : undefined;
  if (vendor !== undefined) log(`app layer: code + ${vendor.files} vendored dependency files (${(vendor.bytes / 1e6).toFixed(1)} MB)`);
  const prioritized = [...prioritizedFiles(rootfs), ...APP_FILES, ...(vendor !== undefined ? VENDOR_STARTUP_FILES : [])];
  const gzip = {} as Record<AppVersion, string>;
  const estargz = {} as Record<AppVersion, string>;
  const estargzLayers: Array<Array<{ digest: string; size: number }>> = [];
  let gzipTopBytes = 0;
  let topTarBytes = 0;
  let convertSeconds = 0;
  for (const version of APP_VERSIONS) {
    const built = await appLayer(version, vendor);
    const top = built.blob;
    gzipTopBytes = top.size;
    topTarBytes = built.tarBytes;
    await writeImage(new OciLayout(layout, version), [base, top], run);
    gzip[version] = `${registry.host}/bench/app:${version}-gzip`;
    estargz[version] = `${registry.host}/bench/app:${version}-esgz`;
    log(`pushing ${gzip[version]}; lazypull convert ${estargz[version]} --prioritize (${prioritized.length} start-up paths) ...`);
    await pushImage(work, gzip[version], [base, top], run);
    const converted = await convertWithCli(work, `oci:${layout}:${version}`, estargz[version], prioritized);
    convertSeconds += converted.seconds;
    estargzLayers.push(converted.layers);
  }
  // The point of the benchmark: v2 shares v1's base layer, byte for byte, in both forms.
  const [v1Layers, v2Layers] = estargzLayers;
  if (v1Layers?.length !== 2 || v2Layers?.length !== 2 || v1Layers[0]!.digest !== v2Layers[0]!.digest || v1Layers[1]!.digest === v2Layers[1]!.digest) {
    throw new Error(`the eStargz v1 and v2 should share the base layer and differ in the top one: ${JSON.stringify(estargzLayers)}`);
  }
  return {
    rootfs,
    gzip,
    estargz,
    gzipBaseBytes: base.size,
    estargzBaseBytes: v1Layers[0]!.size,
    gzipTopBytes,
    estargzTopBytes: v2Layers[1]!.size,
    appLayer: kind,
    topTarBytes,
    vendoredFiles: vendor?.files ?? 0,
    prioritized: prioritized.length,
    convertSeconds,
  };
}
