#!/usr/bin/env node
/**
 * The `lazypull` command line: a thin layer that parses arguments and calls
 * into the converter, the filesystem and the snapshotter.
 */
import { Command } from 'commander';
import { isLazypullError, redact, toError } from '../errors';
import { convertLayerCommand, tocCommand } from './layer-commands';
import { convertImageCommand } from './image-commands';
import { demoCommand } from './demo-command';

function run(action: (...args: any[]) => Promise<void>): (...args: any[]) => Promise<void> {
  return async (...args: any[]) => {
    try {
      await action(...args);
    } catch (value) {
      const err = toError(value);
      const code = isLazypullError(err) ? ` [${err.code}]` : '';
      process.stderr.write(`lazypull: ${redact(err.message)}${code}\n`);
      if (process.env.LAZYPULL_DEBUG && err.stack) process.stderr.write(`${redact(err.stack)}\n`);
      process.exitCode = 1;
    }
  };
}

// A reader that goes away early (`lazypull toc X | head`) is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const program = new Command();
program.name('lazypull').description('Lazy pulling of container images: eStargz conversion and a containerd remote snapshotter');

program
  .command('convert-layer')
  .description('convert one layer (tar or tar.gz) into an eStargz blob')
  .argument('<in>', 'input layer: .tar.gz or plain .tar')
  .argument('<out>', 'output eStargz blob (written atomically)')
  .option('--chunk-size <bytes>', 'split regular files into chunks of this size (default 4194304)')
  .option('--level <0-9>', 'gzip compression level (default 9)')
  .option('--prioritize <listfile>', 'file listing paths in access order; they go first, then .prefetch.landmark')
  .option('--json', 'print one JSON object with digest, size, diffID, tocDigest, uncompressedSize')
  .action(run(convertLayerCommand));

program
  .command('convert')
  .description('convert a whole image to eStargz: SRC and DST are oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG|@DIGEST]')
  .argument('<src>')
  .argument('<dst>')
  .option('--plain-http', 'talk plain HTTP to the registries')
  .option('--platform <os/arch>', 'convert only this platform of a multi-platform image (default: this machine)')
  .option('--all-platforms', 'convert every platform of a multi-platform image')
  .option('--level <0-9>', 'gzip compression level (default 9)')
  .option('--chunk-size <bytes>', 'chunk size for regular files (default 4194304)')
  .option('--prioritize <listfile>', 'paths in access order, applied to every layer')
  .option('--json', 'print a JSON summary')
  .action(run(convertImageCommand));

program
  .command('toc')
  .description('print the TOC JSON of a local eStargz blob')
  .argument('<blob>')
  .action(run(tocCommand));

program
  .command('demo')
  .description('build a sample image, convert it to eStargz into a private loopback registry, read its TOC lazily, run it with a private containerd, clean up (root)')
  .option('--json', 'print one JSON object with the measured facts, nothing else')
  .option('--keep', 'keep the temp dir (image, registry storage, containerd root and log) and print where it is')
  .action(run(demoCommand));

program.parseAsync(process.argv).catch((value) => {
  process.stderr.write(`lazypull: ${redact(toError(value).message)}\n`);
  process.exitCode = 1;
});
