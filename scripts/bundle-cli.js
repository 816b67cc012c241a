#!/usr/bin/env node
/**
 * After `tsc`: bundle the CLI entry point (dist/src/cli/main.js as tsc
 * wrote it) and the JavaScript it loads into dist/src/cli/main.bundle.js,
 * then put the code-cache loader (scripts/cli-loader.js) in its place as
 * dist/src/cli/main.js, and make the V8 code cache once.
 *
 * Why one file: `lazypull` runs as short-lived processes on the cold-start
 * path (`lazypull pull`, one layer server per mount), and Node.js spends
 * most of their start-up resolving and reading a few hundred small module
 * files (grpc-js, protobufjs, undici). One file loads in about half the
 * time. Why the loader: it compiles that file with the bytecode V8 cached
 * from an earlier run, which saves most of the remaining compile time
 * (measured: docs/benchmarks.md, "CLI start-up"). Every other dist/ file
 * stays as tsc wrote it, for tests and for the gzip worker thread.
 *
 * Native modules stay outside the bundle (they load their binaries relative
 * to their own package). The bundle runs with the loader's `require`,
 * `__dirname` and `__filename` (dist/src/cli/main.js), so the
 * `__dirname`-relative paths in src/ (proto/, sibling dist/src folders)
 * mean the same: every src module lives one level under dist/src.
 */
const { buildSync, transformSync } = require('esbuild');
const { spawnSync } = require('node:child_process');
const { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');

const cliDir = join(__dirname, '..', 'dist', 'src', 'cli');
const entry = join(cliDir, 'main.js');
const bundle = join(cliDir, 'main.bundle.js');
const loader = join(__dirname, 'cli-loader.js');

if (readFileSync(entry, 'utf8') === readFileSync(loader, 'utf8')) {
  throw new Error(`${entry} is already the loader: run tsc before bundling (npm run build)`);
}

/** Readers (a CLI started meanwhile) see the old file or the new one. */
function writeAtomically(file, data, mode) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, file);
}

const result = buildSync({
  entryPoints: [entry],
  write: false,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['fuse-native', 'lmdb'],
  // The source map of the input is not chained; stack traces name the bundle's lines.
  sourcemap: false,
  logLevel: 'warning',
});
const bundled = result.outputFiles[0].text.replace(
  /^#![^\n]*/,
  // The loader compiles the bundle inside a function, where `#!` is a syntax error; a comment keeps the line numbers.
  '// The lazypull CLI: run through main.js, which adds the V8 code cache (scripts/cli-loader.js).',
);
// esbuild escapes non-ASCII characters in code but leaves them in comments; escaped there too, the file is
// ASCII, which Node.js decodes and V8 scans faster. Kept only if the code is the same without comments.
const ascii = bundled.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
const withoutComments = (js) => transformSync(js, { loader: 'js', minifyWhitespace: true, legalComments: 'none' }).code;
const code = ascii === bundled || withoutComments(ascii) === withoutComments(bundled) ? ascii : bundled;
writeAtomically(bundle, code, 0o644);
writeAtomically(entry, readFileSync(loader), 0o755);
// tsc's source map describes the unbundled main.js, which is gone.
rmSync(`${entry}.map`, { force: true });

// The V8 code cache, made ahead of time so that the first `lazypull pull` or
// mount after a build does not pay for it: the loader writes it at the exit
// of a pull that loads everything a pull loads (containerd's gRPC API, the
// registry client) and then fails at once, before it contacts anything.
// (Its content measured best for pulls and as good as any for mounts.)
for (const name of readdirSync(cliDir)) if (/^main\.bundle\.js\.(?:[0-9a-f]{8}\.)?v8cache$/.test(name)) rmSync(join(cliDir, name), { force: true });
const warmUp = spawnSync(process.execPath, [entry, 'pull', '127.0.0.1:1/lazypull-build:warm-up', '--no-daemon', '--address', join(cliDir, 'no-containerd.sock')], {
  env: { ...process.env, LAZYPULL_CODE_CACHE: '1', LAZYPULL_CODE_CACHE_DIR: '', LAZYPULL_CODE_CACHE_DEBUG: '1' },
  encoding: 'utf8',
  timeout: 60_000,
});
if (!/^lazypull code cache: wrote /m.test(warmUp.stderr ?? '')) {
  // Not fatal: without a cache the CLI runs as fast as before, and its first run writes one.
  process.stderr.write(`bundle-cli: the V8 code cache was not written (exit ${warmUp.status}):\n${warmUp.stderr ?? warmUp.error}\n`);
}
