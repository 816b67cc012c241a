/**
 * Tar bytes for the entries a converter adds itself: the TOC and the
 * landmark files. They have short ASCII names and fixed metadata, so one
 * USTAR header block is all they need. (tar-stream's packer cannot write
 * them: it turns mode 0, which the reference converter uses, into 0644.)
 */
import { BLOCK_SIZE, paddingFor } from './tar-reader';

/** Two zero blocks end a tar archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK_SIZE);

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

/** One USTAR header block for a regular file owned by root with mtime 0. */
export function regularFileHeader(name: string, size: number, mode: number): Buffer {
  if (Buffer.byteLength(name) > 100 || !/^[\x20-\x7e]+$/.test(name)) throw new Error(`internal: "${name}" needs more than a USTAR header`);
  const block = Buffer.alloc(BLOCK_SIZE);
  block.write(name, 0, 'ascii');
  block.write(octal(mode, 8), 100, 'ascii');
  block.write(octal(0, 8), 108, 'ascii');
  block.write(octal(0, 8), 116, 'ascii');
  block.write(octal(size, 12), 124, 'ascii');
  block.write(octal(0, 12), 136, 'ascii');
  block.write('        ', 148, 'ascii');
  block.write('0', 156, 'ascii');
  block.write('ustar\x0000', 257, 'latin1');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

/** Header, content and padding of one regular-file entry (no end-of-archive). */
export function regularFileEntry(name: string, content: Buffer, mode: number): Buffer {
  return Buffer.concat([regularFileHeader(name, content.length, mode), content, Buffer.alloc(paddingFor(content.length))]);
}
