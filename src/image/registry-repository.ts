/**
 * A registry repository as a conversion source or target, on top of the
 * shared registry client.
 */
import type { Readable } from 'node:stream';
import { LazypullError } from '../errors';
import type { RegistryClient } from '../registry/client';
import { MANIFEST_ACCEPT } from '../registry/media-types';
import { formatReference, type ImageReference } from '../registry/reference';
import { sha256Digest } from '../format/toc';
import type { ImageSource, ImageTarget, RepositoryLocation, RootManifest } from './image-store';
import type { Descriptor } from './image-types';

export class RegistryRepository implements ImageSource, ImageTarget {
  readonly label: string;
  readonly location: RepositoryLocation;

  constructor(private readonly client: RegistryClient, readonly ref: ImageReference) {
    this.label = formatReference(ref);
    this.location = { registry: ref.registry, repository: ref.repository };
  }

  private at(digest?: string): ImageReference {
    return { registry: this.ref.registry, repository: this.ref.repository, ...(digest ? { digest } : {}) };
  }

  async resolveRoot(): Promise<RootManifest> {
    const ref = this.ref.tag || this.ref.digest ? this.ref : { ...this.ref, tag: 'latest' };
    return this.client.getManifest(ref, [...MANIFEST_ACCEPT]);
  }

  async readManifest(desc: Descriptor): Promise<Buffer> {
    const fetched = await this.client.getManifest(this.at(desc.digest), [desc.mediaType, ...MANIFEST_ACCEPT]);
    return fetched.body;
  }

  async readBlob(desc: Descriptor): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of await this.client.getBlob(this.at(), desc.digest)) chunks.push(chunk as Buffer);
    const data = Buffer.concat(chunks);
    const actual = sha256Digest(data);
    if (actual !== desc.digest) {
      throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `${this.label}: blob ${desc.digest} has digest ${actual}`, { reference: this.label, digest: desc.digest });
    }
    return data;
  }

  openBlob(desc: Descriptor): Promise<Readable> {
    return this.client.getBlob(this.at(), desc.digest);
  }

  hasBlob(desc: Descriptor): Promise<boolean> {
    return this.client.blobExists(this.at(), desc.digest);
  }

  async putBlob(desc: Descriptor, open: () => Readable, mountFrom?: RepositoryLocation): Promise<void> {
    const sameRegistry = mountFrom && mountFrom.registry === this.ref.registry && mountFrom.repository !== this.ref.repository;
    await this.client.pushBlob(this.at(), desc.digest, desc.size, open, sameRegistry ? { mountFrom: mountFrom.repository } : {});
  }

  async putManifest(desc: Descriptor, body: Buffer, root: boolean): Promise<void> {
    const ref = root ? { ...this.at(), tag: this.ref.tag ?? 'latest' } : this.at(desc.digest);
    if (root && this.ref.digest && !this.ref.tag) {
      throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${this.label}: a conversion target needs a tag, not a digest`);
    }
    await this.client.putManifest(ref, desc.mediaType, body);
  }

  async close(): Promise<void> {
    // The client is shared and closed by its owner.
  }
}

