/**
 * A file written under a temporary name and renamed into place when
 * complete, so readers never see a partial file and a failure leaves
 * nothing behind. Tracks the position and the sha256 of what was written.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export class AtomicFile {
  private readonly hash: Hash = createHash('sha256');
  private handle: fs.FileHandle | undefined;
  /** Bytes written so far. */
  position = 0;

  private constructor(readonly tempPath: string) {}

  /** Open a temp file next to `target` (same filesystem, so rename is atomic). */
  static async create(target: string): Promise<AtomicFile> {
    const temp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    const file = new AtomicFile(temp);
    file.handle = await fs.open(temp, 'wx', 0o644);
    return file;
  }

  async write(data: Buffer): Promise<void> {
    if (!this.handle) throw new Error('write after close');
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done);
      done += bytesWritten;
    }
    this.hash.update(data);
    this.position += data.length;
  }

  /** `sha256:<hex>` of everything written. Call once, after the last write. */
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }

  /** Flush to disk and rename to `target`. */
  async commit(target: string): Promise<void> {
    if (!this.handle) throw new Error('commit after close');
    await this.handle.sync();
    await this.handle.close();
    this.handle = undefined;
    await fs.rename(this.tempPath, target);
  }

  /** Drop the temp file; safe to call after commit or twice. */
  async abort(): Promise<void> {
    if (this.handle) {
      await this.handle.close().catch(() => undefined);
      this.handle = undefined;
    }
    await fs.rm(this.tempPath, { force: true });
  }
}
