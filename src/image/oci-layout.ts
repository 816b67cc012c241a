/**
 * An OCI image layout directory (oci-layout, index.json, blobs/<alg>/<hex>)
 * as a conversion source or target. Tags live in index.json as the
 * `org.opencontainers.image.ref.name` annotation. Every write is atomic.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { LazypullError } from '../errors';
import { OCI_INDEX } from '../registry/media-types';
import { AtomicFile } from '../util/atomic-file';
import type { ImageSource, ImageTarget, RootManifest } from './image-store';
import { parseJson, type Descriptor, type ImageIndex } from './image-types';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

function layoutError(message: string, dir: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_IMAGE_LAYOUT', message, { layout: dir });
}

function blobPath(dir: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (!algorithm || !hex || !/^[a-z0-9]+$/.test(algorithm) || !/^[a-f0-9]+$/.test(hex)) {
    throw layoutError(`invalid digest "${digest}"`, dir);
  }
  return join(dir, 'blobs', algorithm, hex);
}

async function writeFileAtomic(path: string, data: Buffer): Promise<void> {
  const file = await AtomicFile.create(path);
  try {
    await file.write(data);
    await file.commit(path);
  } catch (err) {
    await file.abort();
    throw err;
  }
}

export class OciLayout implements ImageSource, ImageTarget {
  readonly label: string;

  constructor(readonly dir: string, readonly tag?: string) {
    this.label = `oci:${dir}${tag ? `:${tag}` : ''}`;
  }

  private async readIndex(): Promise<ImageIndex> {
    let body: Buffer;
    try {
      body = await fs.readFile(join(this.dir, 'index.json'));
    } catch (err) {
      throw layoutError(`${this.label}: no OCI image layout here (index.json: ${(err as NodeJS.ErrnoException).code})`, this.dir);
    }
    return parseJson<ImageIndex>(body, `${this.label}: index.json`);
  }

  async resolveRoot(): Promise<RootManifest> {
    const index = await this.readIndex();
    const manifests = index.manifests ?? [];
    let found: Descriptor | undefined;
    if (this.tag) {
      found = manifests.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === this.tag);
      if (!found) throw layoutError(`${this.label}: no image tagged "${this.tag}" in index.json`, this.dir);
    } else if (manifests.length === 1) {
      found = manifests[0];
    } else {
      throw layoutError(`${this.label}: index.json lists ${manifests.length} images; name one as oci:DIR:TAG`, this.dir);
    }
    const body = await this.readBlob(found);
    return { mediaType: found.mediaType, digest: found.digest, body };
  }

  readManifest(desc: Descriptor): Promise<Buffer> {
    return this.readBlob(desc);
  }

  async readBlob(desc: Descriptor): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await fs.readFile(blobPath(this.dir, desc.digest));
    } catch (err) {
      throw layoutError(`${this.label}: blob ${desc.digest} missing (${(err as NodeJS.ErrnoException).code})`, this.dir);
    }
    const actual = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (actual !== desc.digest) {
      throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `${this.label}: blob ${desc.digest} has digest ${actual}`, { layout: this.dir, digest: desc.digest });
    }
    return data;
  }

  async openBlob(desc: Descriptor): Promise<Readable> {
    const path = blobPath(this.dir, desc.digest);
    try {
      await fs.access(path);
    } catch (err) {
      throw layoutError(`${this.label}: blob ${desc.digest} missing (${(err as NodeJS.ErrnoException).code})`, this.dir);
    }
    return createReadStream(path, { highWaterMark: 1 << 20 });
  }

  private async ensureLayout(): Promise<void> {
    await fs.mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    const marker = join(this.dir, 'oci-layout');
    try {
      await fs.access(marker);
    } catch {
      await writeFileAtomic(marker, Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
    }
  }

  async hasBlob(desc: Descriptor): Promise<boolean> {
    try {
      const stat = await fs.stat(blobPath(this.dir, desc.digest));
      return stat.size === desc.size;
    } catch {
      return false;
    }
  }

  async putBlob(desc: Descriptor, open: () => Readable): Promise<void> {
    await this.ensureLayout();
    const target = blobPath(this.dir, desc.digest);
    const file = await AtomicFile.create(target);
    try {
      for await (const chunk of open()) await file.write(chunk as Buffer);
      const actual = file.digest();
      if (actual !== desc.digest) {
        throw new LazypullError('LAZYPULL_ERR_DIGEST_MISMATCH', `${this.label}: blob ${desc.digest} has digest ${actual}`, { layout: this.dir, digest: desc.digest });
      }
      await file.commit(target);
    } catch (err) {
      await file.abort();
      throw err;
    }
  }

  async putManifest(desc: Descriptor, body: Buffer, root: boolean): Promise<void> {
    await this.ensureLayout();
    await writeFileAtomic(blobPath(this.dir, desc.digest), body);
    if (!root) return;
    let index: ImageIndex;
    try {
      index = await this.readIndex();
    } catch {
      index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
    }
    const tag = this.tag ?? 'latest';
    const manifests = (index.manifests ?? []).filter((m) => m.annotations?.[REF_NAME_ANNOTATION] !== tag);
    const { digest, size, mediaType, platform } = desc;
    manifests.push({ mediaType, digest, size, ...(platform ? { platform } : {}), annotations: { [REF_NAME_ANNOTATION]: tag } });
    await writeFileAtomic(join(this.dir, 'index.json'), Buffer.from(JSON.stringify({ ...index, manifests })));
  }

  async close(): Promise<void> {
    // Nothing held open.
  }
}
