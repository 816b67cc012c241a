/**
 * A registry blob as a BlobReader: every read is one HTTP Range GET. Counts
 * what it fetched, so callers can show how little of a layer they needed.
 */
import type { BlobReader } from '../format/toc-reader';
import type { RegistryClient } from './client';
import type { ImageReference } from './reference';

export class RemoteBlob implements BlobReader {
  bytesFetched = 0;
  requests = 0;

  constructor(
    private readonly client: RegistryClient,
    private readonly repo: ImageReference,
    readonly digest: string,
    /** From the layer descriptor; ranges are checked against it. */
    readonly size: number,
  ) {}

  async readAt(offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const data = await this.client.getBlobRange(this.repo, this.digest, offset, offset + length - 1);
    this.requests++;
    this.bytesFetched += data.length;
    return data;
  }
}
