/**
 * The CRI sandbox ("pause") image, built without network: one layer with a
 * static busybox whose `sleep` holds the pod's namespaces, pushed to a
 * registry so containerd's CRI plugin pulls it like any image. The sandbox is
 * stopped with SIGKILL, so sleep ignoring SIGTERM as PID 1 does not matter.
 */
import { readFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { LazypullError } from '../errors';
import { RegistryRepository } from '../image/registry-repository';
import { packTar, type TarEntrySpec } from '../image/pack-tar';
import { layerFromBuffers, writeImage } from '../image/write-image';
import { RegistryClient } from '../registry/client';
import { parseReference } from '../registry/reference';

export const PAUSE_REPOSITORY = 'lazypull/pause';
export const PAUSE_TAG = '3.9';
/** About 68 years: "forever" for a sandbox. */
export const PAUSE_ENTRYPOINT = ['/bin/sleep', '2147483647'];
const BUSYBOX = '/bin/busybox';

async function pauseLayerTar(): Promise<Buffer> {
  let busybox: Buffer;
  try {
    busybox = await readFile(BUSYBOX);
  } catch {
    throw new LazypullError(
      'LAZYPULL_ERR_PREREQUISITE_MISSING',
      `${BUSYBOX} is missing: install the Debian package busybox-static (apt-get install busybox-static)`,
      { file: BUSYBOX, package: 'busybox-static' },
    );
  }
  const entries: TarEntrySpec[] = [
    { header: { name: 'bin/', type: 'directory', mode: 0o755 } },
    { header: { name: 'bin/busybox', type: 'file', mode: 0o755 }, content: busybox },
    { header: { name: 'bin/sleep', type: 'symlink', linkname: 'busybox', mode: 0o777 } },
  ];
  return packTar(entries);
}

/** Build the pause image and push it to the plain-HTTP registry at `registryHost`; its reference. */
export async function pushPauseImage(registryHost: string, dockerConfigPath: string): Promise<string> {
  const tar = await pauseLayerTar();
  const ref = `${registryHost}/${PAUSE_REPOSITORY}:${PAUSE_TAG}`;
  // A private registry without auth: keep any docker config.json of the user out of it.
  const client = new RegistryClient({ plainHttp: [registryHost], dockerConfigPath });
  try {
    await writeImage(new RegistryRepository(client, parseReference(ref)), [layerFromBuffers(gzipSync(tar), tar)], { entrypoint: PAUSE_ENTRYPOINT });
  } finally {
    await client.close();
  }
  return ref;
}
