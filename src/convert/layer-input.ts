/**
 * Opens a layer file as a stream of uncompressed tar bytes, whether it is
 * gzip-compressed or a plain tar, and turns zlib's failures into errors
 * that say what is wrong with which layer.
 */
import { createReadStream, promises as fs } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { LazypullError } from '../errors';

export type LayerCompression = 'gzip' | 'none';

export async function detectCompression(path: string): Promise<LayerCompression> {
  const handle = await fs.open(path, 'r');
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    if (bytesRead >= 2 && magic[0] === 0x1f && magic[1] === 0x8b) return 'gzip';
    if (bytesRead === 4 && magic.readUInt32LE(0) === 0xfd2fb528) {
      throw new LazypullError('LAZYPULL_ERR_TAR_UNSUPPORTED', `${path}: zstd-compressed layers are not supported`, { layer: path });
    }
    return 'none';
  } finally {
    await handle.close();
  }
}

/** The gunzip error for a layer, truncated or corrupt. */
export function gzipError(layer: string, err: unknown): LazypullError {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(e?.message ?? '')) {
    return new LazypullError('LAZYPULL_ERR_GZIP_TRUNCATED', `${layer}: gzip stream is truncated (unexpected end of file)`, { layer }, { cause: err });
  }
  return new LazypullError('LAZYPULL_ERR_GZIP_CORRUPT', `${layer}: gzip stream is corrupt (${e?.message ?? String(err)})`, { layer }, { cause: err });
}

/**
 * Uncompressed tar bytes of the layer. `onRawBytes` reports progress in
 * bytes of the file as stored.
 */
export async function* openLayerTar(path: string, onRawBytes?: (n: number) => void): AsyncGenerator<Buffer> {
  const compression = await detectCompression(path);
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  if (onRawBytes) file.on('data', (chunk) => onRawBytes(chunk.length));
  if (compression === 'none') {
    yield* file as AsyncIterable<Buffer>;
    return;
  }
  const gunzip = createGunzip({ chunkSize: 256 << 10 });
  file.on('error', (err) => gunzip.destroy(err));
  file.pipe(gunzip);
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code?.startsWith('Z_') || /unexpected end of file|incorrect header|invalid/i.test((err as Error).message)) {
      throw gzipError(path, err);
    }
    throw err;
  } finally {
    file.destroy();
    gunzip.destroy();
  }
}
