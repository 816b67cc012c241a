/** A local file as a BlobReader. */
import { promises as fs } from 'node:fs';
import type { BlobReader } from '../format/toc-reader';

export class FileBlob implements BlobReader {
  private constructor(private readonly handle: fs.FileHandle, readonly size: number) {}

  static async open(path: string): Promise<FileBlob> {
    const handle = await fs.open(path, 'r');
    const { size } = await handle.stat();
    return new FileBlob(handle, size);
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buf.subarray(0, done);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
