/**
 * A RegistryClient that reads through registry mirrors configured in
 * containerd's hosts.toml format: each read goes to the mirrors in order
 * and falls back to the origin. Writes go to the origin only. A mirror that
 * fails (network, 5xx, 404, auth) is skipped; the origin's error is the one
 * reported.
 */
import type { Readable } from 'node:stream';
import { RegistryClient, type FetchedManifest, type GetBlobOptions, type ManifestDescriptor, type RegistryClientOptions } from './client';
import { debug } from './debug';
import { HostsConfig, type HostCapability } from './hosts-config';
import type { ImageReference } from './reference';

export interface MirroringClientOptions extends RegistryClientOptions {
  /** containerd `config_path` directory holding `<registry>/hosts.toml`. */
  hostsDir?: string;
}

export class MirroringRegistryClient extends RegistryClient {
  private readonly hosts: HostsConfig;

  constructor(opts: MirroringClientOptions = {}) {
    const hosts = new HostsConfig(opts.hostsDir, typeof opts.plainHttp === 'function' ? false : opts.plainHttp ?? false);
    // Which hosts speak plain HTTP follows from the endpoints hosts.toml names.
    const plainHosts = new Set<string>();
    const explicit = opts.plainHttp;
    super({
      ...opts,
      plainHttp: (host) => plainHosts.has(host) || (typeof explicit === 'function' ? explicit(host) : explicit === true || (Array.isArray(explicit) && explicit.includes(host))),
    });
    this.hosts = hosts;
    this.rememberPlain = (host) => plainHosts.add(host);
  }

  private readonly rememberPlain: (host: string) => void;

  private async tryEndpoints<T>(ref: ImageReference, capability: HostCapability, what: string, op: (at: ImageReference) => Promise<T>): Promise<T> {
    const endpoints = this.hosts.endpoints(ref.registry, capability);
    for (const endpoint of endpoints) {
      if (endpoint.plainHttp) this.rememberPlain(endpoint.host);
      const at = { ...ref, registry: endpoint.host };
      if (endpoint.origin) return op(at);
      try {
        return await op(at);
      } catch (err) {
        debug(`mirror ${endpoint.host} failed for ${what}: ${(err as Error).message}; trying the next host`);
      }
    }
    // hosts.toml always ends with the origin, so this is not reached.
    throw new Error('internal: no registry endpoint');
  }

  override getManifest(ref: ImageReference, accept?: string[]): Promise<FetchedManifest> {
    return this.tryEndpoints(ref, 'resolve', 'manifest', (at) => super.getManifest(at, accept));
  }

  override headManifest(ref: ImageReference, accept?: string[]): Promise<ManifestDescriptor | undefined> {
    return this.tryEndpoints(ref, 'resolve', 'manifest', (at) => super.headManifest(at, accept));
  }

  override getBlob(repo: ImageReference, digest: string, opts?: GetBlobOptions): Promise<Readable> {
    return this.tryEndpoints(repo, 'pull', digest, (at) => super.getBlob(at, digest, opts));
  }

  override getBlobRange(repo: ImageReference, digest: string, start: number, endInclusive: number): Promise<Buffer> {
    return this.tryEndpoints(repo, 'pull', digest, (at) => super.getBlobRange(at, digest, start, endInclusive));
  }

  override getBlobTail(repo: ImageReference, digest: string, length: number): Promise<{ data: Buffer; blobSize: number }> {
    return this.tryEndpoints(repo, 'pull', digest, (at) => super.getBlobTail(at, digest, length));
  }

  override blobExists(repo: ImageReference, digest: string): Promise<boolean> {
    return this.tryEndpoints(repo, 'pull', digest, (at) => super.blobExists(at, digest));
  }
}
