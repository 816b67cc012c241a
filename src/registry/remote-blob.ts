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
    /** From the layer descriptor (or the registry's answer to a suffix range); ranges are checked against it. */
    readonly size: number,
  ) {}

  /**
   * A blob known only by digest: its last `tailLength` bytes (fewer when it
   * is shorter) and its size, in one suffix-range request.
   */
  static async openTail(client: RegistryClient, repo: ImageReference, digest: string, tailLength: number): Promise<{ blob: RemoteBlob; tail: Buffer }> {
    const { data, blobSize } = await client.getBlobTail(repo, digest, tailLength);
    const blob = new RemoteBlob(client, repo, digest, blobSize);
    blob.requests++;
    blob.bytesFetched += data.length;
    return { blob, tail: data };
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Buffer.alloc(0);
    const data = await this.client.getBlobRange(this.repo, this.digest, offset, offset + length - 1);
    this.requests++;
    this.bytesFetched += data.length;
    return data;
  }
}
