#!/usr/bin/env node
/**
 * After `tsc`: bundle the CLI entry point (dist/src/cli/main.js) and the
 * JavaScript it loads into that one file, in place.
 *
 * Why: `lazypull` runs as short-lived processes on the cold-start path
 * (`lazypull pull`, one layer server per mount), and Node.js spends most of
 * their start-up resolving and reading a few hundred small module files
 * (grpc-js, protobufjs, undici). One file loads in about half the time
 * (measured: docs/benchmarks.md). Every other dist/ file stays as tsc wrote
 * it, for tests and for the gzip worker thread.
 *
 * Native modules stay outside the bundle (they load their binaries relative
 * to their own package). The bundle sits where main.js was, so the
 * `__dirname`-relative paths in src/ (proto/, sibling dist/src folders) mean
 * the same: every src module lives one level under dist/src.
 */
const { buildSync } = require('esbuild');
const { join } = require('node:path');

const entry = join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
buildSync({
  entryPoints: [entry],
  outfile: entry,
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['fuse-native', 'lmdb'],
  // The source map of the input is not chained; stack traces name the bundled file's lines.
  sourcemap: false,
  logLevel: 'warning',
});
