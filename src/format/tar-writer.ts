/**
 * Tar bytes for the entries a converter adds itself (the TOC and the
 * landmark files), built with tar-stream's packer.
 */
import { pack } from 'tar-stream';
import { BLOCK_SIZE } from './tar-reader';

/** Two zero blocks end a tar archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK_SIZE);

/** Header, content and padding of one regular-file entry (no end-of-archive). */
export async function regularFileEntry(name: string, content: Buffer, mode = 0o644): Promise<Buffer> {
  const packer = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of packer) chunks.push(chunk as Buffer);
  })();
  packer.entry({ name, size: content.length, mode, mtime: new Date(0), uid: 0, gid: 0, type: 'file' }, content);
  packer.finalize();
  await collected;
  const all = Buffer.concat(chunks);
  return all.subarray(0, all.length - END_OF_ARCHIVE.length);
}
