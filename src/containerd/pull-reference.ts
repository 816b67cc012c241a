/**
 * A whole `lazypull pull` from an image reference, for both places that run
 * one: the CLI in its own process and the snapshotter daemon on the CLI's
 * behalf. Checks first (a malformed reference, a missing containerd socket:
 * nothing is contacted), then the manifest and config are fetched while
 * `connect` gets a channel to containerd, then pullResolvedImage.
 */
import { MirroringRegistryClient } from '../registry/mirroring-client';
import { parseReference } from '../registry/reference';
import type { Platform } from '../image/image-types';
import { trace } from '../util/trace';
import { ContainerdConnection } from './grpc-connection';
import { pullResolvedImage, resolveImage, type PullImageOptions, type PullResult } from './pull-image';

export interface PullSource {
  reference: string;
  /** containerd's socket. */
  address: string;
  platform?: Platform;
  plainHttp: boolean;
  hostsDir?: string;
  /** Default: the docker CLI's config.json of this process's user. */
  dockerConfigPath?: string;
}

export async function pullReference(
  source: PullSource,
  connect: (address: string) => Promise<ContainerdConnection>,
  opts: PullImageOptions,
): Promise<PullResult> {
  const ref = parseReference(source.reference);
  await ContainerdConnection.checkSocket(source.address);
  const registry = new MirroringRegistryClient({
    plainHttp: source.plainHttp,
    ...(source.hostsDir !== undefined ? { hostsDir: source.hostsDir } : {}),
    ...(source.dockerConfigPath !== undefined ? { dockerConfigPath: source.dockerConfigPath } : {}),
  });
  try {
    // The registry answers while containerd's channel is set up.
    const resolving = resolveImage(registry, ref, source.platform);
    resolving.catch(() => undefined);
    const conn = await connect(source.address);
    const image = await resolving;
    trace('pull.resolved');
    return await pullResolvedImage(conn, registry, source.reference, image, { ...opts, ...(source.platform ? { platform: source.platform } : {}) });
  } finally {
    await registry.close();
  }
}
