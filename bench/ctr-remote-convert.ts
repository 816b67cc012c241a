/**
 * Baseline: the reference converter, `ctr-remote image convert --estargz`,
 * on an image whose only layer is the benchmark layer. The image import is
 * setup; only the convert command is timed.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OciLayout } from '../src/image/oci-layout';
import { layerFromFile, writeImage } from '../src/image/write-image';
import { startContainerd } from '../src/sandbox/local-containerd';
import { BenchLayer } from './bench-layer';
import { Timing, timeCommand } from './timed-command';

const execFileP = promisify(execFile);

export interface CtrRemoteResult extends Timing {
  level: number;
  outputBytes: number;
}

export async function ctrRemoteAvailable(): Promise<boolean> {
  try {
    await execFileP('ctr-remote', ['--version']);
    return true;
  } catch {
    return false;
  }
}

export async function benchCtrRemote(layer: BenchLayer, levels: number[], log: (line: string) => void): Promise<CtrRemoteResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'lzp-bench-ctr-'));
  const containerd = await startContainerd().catch(async (err: unknown) => {
    await rm(work, { recursive: true, force: true });
    throw err;
  });
  const results: CtrRemoteResult[] = [];
  try {
    const base = 'docker.io/lazypull-bench/layer';
    await writeImage(new OciLayout(join(work, 'oci'), 'src'), [await layerFromFile(layer.tarGzPath)], { cmd: ['/bin/true'] });
    // `ctr image import` reads an OCI layout as a tar.
    await execFileP('tar', ['-C', join(work, 'oci'), '-cf', join(work, 'oci.tar'), 'oci-layout', 'index.json', 'blobs']);
    await containerd.ctr(['image', 'import', '--no-unpack', '--base-name', base, join(work, 'oci.tar')], { timeoutMs: 300_000 });
    await rm(join(work, 'oci'), { recursive: true, force: true });
    await rm(join(work, 'oci.tar'), { force: true });
    for (const level of levels) {
      log(`ctr-remote image convert --estargz --estargz-compression-level ${level} ...`);
      const dst = `${base}:esgz-${level}`;
      const timing = await timeCommand('ctr-remote', [
        '-a', containerd.address, '-n', containerd.namespace,
        'image', 'convert', '--estargz', '--oci', '--estargz-compression-level', String(level),
        `${base}:src`, dst,
      ]);
      const manifestDigest = timing.stdout.match(/sha256:[0-9a-f]{64}/)?.[0];
      let outputBytes = 0;
      if (manifestDigest) {
        const manifest = JSON.parse((await containerd.ctr(['content', 'get', manifestDigest])).stdout) as { layers: Array<{ size: number }> };
        outputBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
      }
      results.push({ ...timing, level, outputBytes });
      // Drop the output so the next level cannot find its blob already stored.
      await containerd.ctr(['image', 'rm', '--sync', dst], { check: false });
    }
  } finally {
    await containerd.stop();
    await rm(work, { recursive: true, force: true });
  }
  return results;
}
