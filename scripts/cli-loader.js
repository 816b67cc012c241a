#!/usr/bin/env node
/**
 * The `lazypull` entry point (dist/src/cli/main.js): runs the CLI's esbuild
 * bundle next to it (main.bundle.js) with a V8 code cache. Built from
 * scripts/cli-loader.js by scripts/bundle-cli.js; edit it there.
 *
 * Why: `lazypull pull` and the `lazypull mount` layer servers are
 * short-lived processes on the cold-start path, and even as one file the
 * CLI is a few MB of JavaScript that V8 would parse and compile at every
 * start. With the bytecode of an earlier run a pull starts ~55 ms sooner
 * (docs/benchmarks.md, "CLI start-up (V8 code cache)"). Node 20 has no
 * `module.enableCompileCache()` (Node 22), so this does it by hand: the
 * bundle is compiled by `vm.Script` with `cachedData`, wrapped as a
 * CommonJS module that gets this module's `exports`, `require`, `module`,
 * `__filename` and `__dirname`, so it runs exactly as if it were this file.
 *
 * The cache: `main.bundle.js.v8cache` (with Node.js flags, one named after
 * them) next to the bundle if that folder is
 * writable, else in `$TMPDIR/lazypull-v8-cache/` if that folder is this
 * user's alone (the cache is code we run), or in `$LAZYPULL_CODE_CACHE_DIR`.
 * Its first line holds a key of the bundle file (inode, size, times), Node.js/V8, arch and
 * flags, and the payload's length and CRC, so a rebuilt bundle, another
 * Node.js or a damaged file is never handed to V8. Without a usable cache
 * the bundle runs without one and the cache is written (temp file +
 * rename) after the command has run for a second, or at exit if sooner.
 * The build writes one ahead of time. Any failure here only means no
 * cache: nothing is printed, the command runs the same.
 * `LAZYPULL_CODE_CACHE=0` turns it off; `LAZYPULL_CODE_CACHE_DEBUG=1`
 * prints on stderr what was found (hit, miss, stale, corrupt, rejected,
 * untrusted, off) and what was written.
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const BUNDLE = path.join(__dirname, 'main.bundle.js');
/**
 * V8 rejects a cache made under other heap or JIT flags, so a process
 * started with Node.js flags (the layer servers', see
 * src/snapshotter/fuse-process-layers.ts) has a file of its own and does
 * not overwrite the one of the commands run without flags.
 */
const CACHE_NAME =
  process.execArgv.length === 0
    ? 'main.bundle.js.v8cache'
    : `main.bundle.js.${require('node:crypto').createHash('sha256').update(process.execArgv.join('\0')).digest('hex').slice(0, 8)}.v8cache`;
const FORMAT = 'lazypull-v8-cache/1';
/** A command still running after this long has run its start-up code: its compiled functions are saved then. */
const WRITE_AFTER_MS = 1000;
/** Nothing before the bundle's first line: its line numbers stay those of main.bundle.js in stack traces. */
const WRAPPER_HEAD = '(function (exports, require, module, __filename, __dirname) { ';
const WRAPPER_TAIL = '\n})';

const debug =
  process.env.LAZYPULL_CODE_CACHE_DEBUG === '1' ? (line) => process.stderr.write(`lazypull code cache: ${line}\n`) : () => undefined;

function sha256(...parts) {
  const hash = require('node:crypto').createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest('hex');
}

/**
 * Everything a cache is only good for: this very bundle file, this Node.js
 * and V8, this machine, these flags. The file is named by its inode and
 * times rather than by a hash of its 3 MB (which cost ~7 ms of every
 * start): a rebuild renames a new file into place, and any write changes
 * its ctime, which unlike mtime cannot be set back.
 */
function cacheKey(stat) {
  const file = [stat.dev, stat.ino, stat.size, stat.mtimeNs, stat.ctimeNs].join(':');
  const env = [process.version, process.versions.v8, process.arch, process.platform, process.execArgv.join(' '), process.env.NODE_OPTIONS ?? ''];
  return sha256(`${file}\0${env.join('\0')}`);
}

function crc32(data) {
  return require('node:zlib').crc32(data) >>> 0;
}

/** Is `dir` a directory of this user's that nobody else can write to? Creates it (0700) when asked. */
function privateDir(dir, create) {
  let st;
  try {
    st = fs.lstatSync(dir);
  } catch (err) {
    if (!create || err.code !== 'ENOENT') return false;
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if (e.code !== 'EEXIST') throw e; // another lazypull made it meanwhile
    }
    st = fs.lstatSync(dir);
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  return st.isDirectory() && (uid === undefined || (st.uid === uid && (st.mode & 0o022) === 0));
}

function writable(dir) {
  try {
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The files that may hold the cache, in the order they are read, and where to write it. */
function cacheLocations() {
  const own = process.env.LAZYPULL_CODE_CACHE_DIR;
  if (own) {
    const file = path.join(own, CACHE_NAME);
    return { read: [file], trusted: () => true, writeTo: () => file };
  }
  const local = path.join(path.dirname(BUNDLE), CACHE_NAME);
  const tmpDir = path.join(require('node:os').tmpdir(), 'lazypull-v8-cache');
  // One temp folder for every copy of lazypull: each bundle path has its file.
  const tmp = path.join(tmpDir, `${sha256(BUNDLE).slice(0, 16)}-${CACHE_NAME}`);
  return {
    read: [local, tmp],
    trusted: (file) => file === local || privateDir(tmpDir, false),
    writeTo: () => (writable(path.dirname(local)) ? local : privateDir(tmpDir, true) ? tmp : undefined),
  };
}

/** `{ state: 'hit', payload }` when `file` holds an intact cache for `key`; else `{ state }` says why not. */
function readCache(file, key, trusted) {
  let data;
  try {
    data = fs.readFileSync(file);
  } catch {
    return { state: 'miss' };
  }
  if (!trusted(file)) return { state: 'untrusted' };
  const eol = data.indexOf(10);
  const header = eol > 0 && eol < 256 ? data.toString('latin1', 0, eol).split(' ') : [];
  if (header.length !== 4 || header[0] !== FORMAT) return { state: 'corrupt' };
  if (header[1] !== key) return { state: 'stale' };
  const payload = data.subarray(eol + 1);
  if (Number(header[2]) !== payload.length || Number(header[3]) !== crc32(payload)) return { state: 'corrupt' };
  return { state: 'hit', payload };
}

function findCache(key, locations) {
  let found = { state: 'miss' };
  for (const file of locations.read) {
    const c = readCache(file, key, locations.trusted);
    if (c.state === 'hit') return { ...c, file };
    if (found.state === 'miss' && c.state !== 'miss') found = { ...c, file };
  }
  return found;
}

/** Temp file + rename: a reader sees the old cache, the new one or none, never half of one. */
function writeCache(file, key, payload) {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    try {
      fs.writeSync(fd, `${FORMAT} ${key} ${payload.length} ${crc32(payload)}\n`, null, 'latin1');
      fs.writeSync(fd, payload);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function compile(source, cachedData) {
  return new vm.Script(source, {
    filename: BUNDLE,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
}

function main() {
  // One descriptor for the key and the text, so both describe the same file even if a build replaces it meanwhile.
  const fd = fs.openSync(BUNDLE, 'r');
  let bundle;
  let stat;
  try {
    stat = fs.fstatSync(fd, { bigint: true });
    bundle = fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const source = WRAPPER_HEAD + bundle.toString('utf8') + WRAPPER_TAIL;
  let cache = { state: 'off' };
  let key;
  let locations;
  if (process.env.LAZYPULL_CODE_CACHE !== '0') {
    try {
      key = cacheKey(stat);
      locations = cacheLocations();
      cache = findCache(key, locations);
    } catch (err) {
      cache = { state: 'off', file: `(${err.message})` };
      locations = undefined;
    }
  }

  let script;
  try {
    script = compile(source, cache.payload);
  } catch (err) {
    // V8 reports a bad cache with `cachedDataRejected`, not by throwing; if anything throws, it is not the cache's fault.
    if (!cache.payload) throw err;
    script = compile(source, undefined);
    cache = { state: 'rejected', file: cache.file };
  }
  if (cache.payload && script.cachedDataRejected) cache = { state: 'rejected', file: cache.file };
  debug(cache.file ? `${cache.state} ${cache.file}` : cache.state);

  if (locations && cache.state !== 'hit') {
    let saved = false;
    const save = () => {
      if (saved) return;
      saved = true;
      try {
        const file = locations.writeTo();
        if (!file) return;
        const data = script.createCachedData();
        writeCache(file, key, data);
        debug(`wrote ${file} (${data.length} bytes)`);
      } catch {
        // No cache this time; the command is not affected.
      }
    };
    setTimeout(save, WRITE_AFTER_MS).unref();
    process.once('exit', save);
  }

  script.runInThisContext().call(module.exports, module.exports, require, module, __filename, __dirname);
}

/**
 * Thin clients, compiled by tsc next to this file: commands on a timed path
 * that a small module runs without the bundle. `lazypull pull` asks the
 * snapshotter daemon to pull (src/cli/daemon-pull-client.ts); `lazypull
 * rollout apply` sends the manifest with node:http (src/cli/thin-apply-client.ts).
 * A client answers false when the CLI should run the command itself (no
 * daemon, an argument it does not know, ...): then the bundle is loaded.
 * `LAZYPULL_THIN_CLIENT=0` runs `rollout apply` in the full CLI (to compare
 * the two, or as a way out); for `pull`, that is --no-daemon.
 */
function thinClient(args) {
  if (args[0] === 'pull') return { module: './daemon-pull-client.js', run: (m) => m.pullThroughDaemon(args.slice(1)) };
  if (args[0] === 'rollout' && args[1] === 'apply' && process.env.LAZYPULL_THIN_CLIENT !== '0') {
    return { module: './thin-apply-client.js', run: (m) => m.thinRolloutApply(args.slice(2)) };
  }
  return undefined;
}

function start() {
  const thin = thinClient(process.argv.slice(2));
  if (!thin) return main();
  let client;
  try {
    client = require(thin.module);
  } catch {
    return main();
  }
  thin.run(client).then(
    (handled) => {
      // Done: output is written (synchronously, for files and pipes on Linux), nothing else is pending.
      if (handled) process.exit();
      main();
    },
    (err) => {
      // Not expected: the client prints its own errors. Output may have begun, or the server been asked, so no second run.
      process.stderr.write(`lazypull: ${require('../errors.js').redact(String(err && err.message))}\n`);
      process.exitCode = 1;
    },
  );
}

start();
