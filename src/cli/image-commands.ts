/** `lazypull convert`: whole-image conversion between OCI layouts and registries. */
import { convertImage, type ConvertImageResult } from '../convert/convert-image';
import { LazypullError } from '../errors';
import { openImageLocation } from '../image/image-location';
import { hostPlatform, parsePlatform } from '../image/image-types';
import { RegistryClient } from '../registry/client';
import { parseIntegerOption, readListFile } from './options';
import { createProgress } from './progress';

export interface ConvertImageFlags {
  plainHttp?: boolean;
  platform?: string;
  allPlatforms?: boolean;
  level?: string;
  chunkSize?: string;
  prioritize?: string;
  json?: boolean;
}

export async function convertImageCommand(src: string, dst: string, flags: ConvertImageFlags): Promise<void> {
  if (flags.platform && flags.allPlatforms) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', '--platform and --all-platforms cannot be used together');
  }
  let client: RegistryClient | undefined;
  const getClient = (): RegistryClient => (client ??= new RegistryClient({ plainHttp: flags.plainHttp === true }));
  const source = openImageLocation(src, getClient);
  const target = openImageLocation(dst, getClient);
  const progress = createProgress('converting image', { json: flags.json });
  try {
    const result = await convertImage(source, target, {
      level: parseIntegerOption('--level', flags.level),
      chunkSize: parseIntegerOption('--chunk-size', flags.chunkSize),
      prioritize: flags.prioritize ? await readListFile(flags.prioritize) : undefined,
      platforms: flags.allPlatforms ? 'all' : [flags.platform ? parsePlatform(flags.platform) : hostPlatform()],
      onProgress: (done, total) => {
        progress.setTotal(total);
        progress.update(done);
      },
    });
    progress.stop();
    process.stdout.write(flags.json ? `${JSON.stringify(result)}\n` : describe(result));
  } finally {
    progress.stop();
    await client?.close();
  }
}

function describe(result: ConvertImageResult): string {
  const lines = [`${result.source} -> ${result.target}`, `  ${result.mediaType} ${result.digest}`];
  for (const m of result.manifests) {
    lines.push(`  manifest ${m.digest}${m.platform ? ` (${m.platform})` : ''}`);
    for (const l of m.layers) {
      lines.push(`    ${l.converted ? 'converted' : 'kept     '} ${l.sourceDigest} -> ${l.digest} (${l.size} bytes, toc ${l.tocDigest})`);
    }
  }
  return `${lines.join('\n')}\n`;
}
