/** `lazypull convert-layer` and `lazypull toc`: single-blob commands. */
import { promises as fs } from 'node:fs';
import { basename } from 'node:path';
import { convertLayerFile } from '../convert/convert-layer';
import { readBlobToc } from '../format/toc-reader';
import { FileBlob } from '../util/file-blob';
import { createProgress } from './progress';
import { parseIntegerOption, readListFile } from './options';

export interface ConvertLayerFlags {
  chunkSize?: string;
  level?: string;
  prioritize?: string;
  json?: boolean;
}

export async function convertLayerCommand(input: string, output: string, flags: ConvertLayerFlags): Promise<void> {
  const progress = createProgress(`converting ${basename(input)}`, { json: flags.json });
  try {
    progress.setTotal((await fs.stat(input)).size);
  } catch {
    // convertLayerFile reports a missing input with a clear error.
  }
  try {
    const result = await convertLayerFile(input, output, {
      chunkSize: parseIntegerOption('--chunk-size', flags.chunkSize),
      level: parseIntegerOption('--level', flags.level),
      prioritize: flags.prioritize ? await readListFile(flags.prioritize) : undefined,
      onProgress: (done) => progress.update(done),
    });
    progress.stop();
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else {
      process.stdout.write(
        `${output}\n  digest            ${result.digest}\n  size              ${result.size}\n  diffID            ${result.diffID}\n` +
          `  tocDigest         ${result.tocDigest}\n  uncompressedSize  ${result.uncompressedSize}\n`,
      );
    }
  } finally {
    progress.stop();
  }
}

export async function tocCommand(blobPath: string): Promise<void> {
  const blob = await FileBlob.open(blobPath);
  try {
    const { json } = await readBlobToc(blob, blobPath);
    process.stdout.write(json.toString('utf8'));
    if (json[json.length - 1] !== 0x0a) process.stdout.write('\n');
  } finally {
    await blob.close();
  }
}
