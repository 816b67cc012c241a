/**
 * The CLI's V8 code cache (scripts/cli-loader.js, built as
 * dist/src/cli/main.js next to the bundle main.bundle.js): the bundle runs
 * as the module main.js was (same output, exit codes, stack traces,
 * `require`, `__dirname`), the cache is written after a run and used by the
 * next, and a damaged cache, a changed bundle, an unwritable or foreign
 * cache folder never change what a command does.
 *
 * Each case runs a copy of the built loader and bundle in a temp folder,
 * so concurrent builds of dist/ do not disturb it; the loader says what it
 * did on stderr with LAZYPULL_CODE_CACHE_DEBUG=1.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { CLI_PATH } from './support/cli';
import { requireFile, requireRoot } from './support/require-env';

const BUILT_DIR = join(CLI_PATH, '..');
const CACHE_NAME = 'main.bundle.js.v8cache';
const DEBUG_PREFIX = 'lazypull code cache: ';
const NOBODY = 65534;

interface Run {
  code: number;
  stdout: string;
  /** stderr without the loader's debug lines */
  stderr: string;
  /** the loader's debug lines, without the prefix */
  cache: string[];
}

function run(entry: string, args: string[], opts: { env?: NodeJS.ProcessEnv; uid?: number; cwd?: string; nodeFlags?: string[] } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...(opts.nodeFlags ?? []), entry, ...args],
      {
        env: { ...process.env, LAZYPULL_CODE_CACHE_DEBUG: '1', LAZYPULL_CODE_CACHE: '', LAZYPULL_CODE_CACHE_DIR: '', LAZYPULL_DEBUG: '', ...opts.env },
        timeout: 60_000,
        maxBuffer: 16 << 20,
        ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        const lines = stderr.split(/(?<=\n)/);
        resolve({
          code,
          stdout,
          stderr: lines.filter((l) => !l.startsWith(DEBUG_PREFIX)).join(''),
          cache: lines.filter((l) => l.startsWith(DEBUG_PREFIX)).map((l) => l.slice(DEBUG_PREFIX.length).trimEnd()),
        });
      },
    );
  });
}

/** The first debug line's word: hit, miss, stale, corrupt, rejected, untrusted, off. */
function state(r: Run): string {
  return (r.cache[0] ?? '').split(' ')[0];
}

function wrote(r: Run): string | undefined {
  const line = r.cache.find((l) => l.startsWith('wrote '));
  return line?.split(' ')[1];
}

/** What a user sees, compared between runs. */
function seen(r: Run): { code: number; stdout: string; stderr: string } {
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

describe('lazypull CLI code cache', function () {
  this.timeout(120_000);
  let work = '';
  let n = 0;

  before(function () {
    requireFile(this, join(BUILT_DIR, 'main.bundle.js'), 'the bundled CLI (npm run build)');
    work = mkdtempSync(join(tmpdir(), 'lazypull-code-cache-'));
    chmodSync(work, 0o755);
  });
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** A private copy of the built loader and bundle: [main.js path, its folder]. */
  const copyCli = (): { entry: string; dir: string } => {
    const dir = join(work, `cli-${++n}`);
    mkdirSync(dir, { mode: 0o755 });
    for (const f of ['main.js', 'main.bundle.js']) copyFileSync(join(BUILT_DIR, f), join(dir, f));
    return { entry: join(dir, 'main.js'), dir };
  };

  describe('runs the bundle as the module main.js', () => {
    it('gives the same output, exit code and stack traces as the bundle run as a plain module', async () => {
      const { entry, dir } = copyCli();
      const bundle = join(dir, 'main.bundle.js');
      const cases: Array<{ args: string[]; code: number; out: RegExp; env?: NodeJS.ProcessEnv }> = [
        { args: ['--help'], code: 0, out: /^Usage: lazypull \[options\] \[command\]/ },
        { args: ['pull', '--help'], code: 0, out: /^Usage: lazypull pull \[options\] <ref>/ },
        { args: ['pull', 'BAD REF!'], code: 1, out: /^lazypull: invalid image reference "BAD REF!".*\[LAZYPULL_ERR_REFERENCE_INVALID\]\n$/ },
        { args: ['pull', 'BAD REF!'], code: 1, out: /^lazypull: invalid image reference[^\n]*\nLazypullError: [^\n]*\n {4}at invalid \(\S+main\.bundle\.js:\d+:\d+\)\n/, env: { LAZYPULL_DEBUG: '1' } },
        { args: ['no-such-command'], code: 1, out: /^error: unknown command 'no-such-command'\n$/ },
      ];
      // Twice: once without a cache (it is written), once with it.
      for (const round of ['miss', 'hit']) {
        for (const c of cases) {
          const viaLoader = await run(entry, c.args, { env: c.env });
          const plain = await run(bundle, c.args, { env: c.env });
          assert.equal(state(viaLoader), c === cases[0] ? round : 'hit', `${c.args.join(' ')}: ${viaLoader.cache.join('; ')}`);
          assert.deepEqual(plain.cache, [], 'the bundle alone knows no cache');
          assert.deepEqual(seen(viaLoader), seen(plain), `lazypull ${c.args.join(' ')} (${round})`);
          assert.equal(viaLoader.code, c.code);
          assert.match(c.code === 0 ? viaLoader.stdout : viaLoader.stderr, c.out);
        }
      }
    });

    it('gives the bundle the exports, require, module, __filename and __dirname of main.js', async () => {
      const dir = join(work, 'synthetic');
      mkdirSync(dir);
      copyFileSync(join(BUILT_DIR, 'main.js'), join(dir, 'main.js'));
      writeFileSync(join(dir, 'helper.js'), 'module.exports = "helper";\n');
      writeFileSync(
        join(dir, 'main.bundle.js'),
        [
          '// a stand-in for the bundle',
          '"use strict";',
          'const strict = (function () { return this === undefined; })();',
          'process.stdout.write(JSON.stringify({ filename: __filename, dirname: __dirname, helper: require("./helper"), resolved: require.resolve("./helper"),',
          '  isMain: require.main === module, moduleFile: module.filename, thisIsExports: this === exports && exports === module.exports, argv1: process.argv[1], strict }));',
          'process.exitCode = Number(process.argv[2] ?? 0);',
          'if (process.argv[3] === "throw") throw new Error("thrown at line 7");',
          '',
        ].join('\n'),
      );
      const entry = join(dir, 'main.js');
      const first = await run(entry, ['3']);
      assert.equal(state(first), 'miss');
      assert.equal(first.code, 3, 'exit code set by the bundle');
      assert.deepEqual(JSON.parse(first.stdout), {
        filename: entry,
        dirname: dir,
        helper: 'helper',
        resolved: join(dir, 'helper.js'),
        isMain: true,
        moduleFile: entry,
        thisIsExports: true,
        argv1: entry,
        strict: true,
      });
      const again = await run(entry, ['3']);
      assert.equal(state(again), 'hit');
      assert.deepEqual(seen(again), seen(first));

      // An uncaught error: exit code 1, the message and a frame at the bundle's own line, as when the bundle runs alone.
      const thrown = await run(entry, ['0', 'throw']);
      const alone = await run(join(dir, 'main.bundle.js'), ['0', 'throw']);
      assert.equal(thrown.code, 1);
      assert.equal(alone.code, 1);
      assert.match(thrown.stderr, /Error: thrown at line 7\n {4}at Object\.<anonymous> \(\S+\/synthetic\/main\.bundle\.js:7:\d+\)/);
      const frame = (s: string): string | undefined => /main\.bundle\.js:\d+:\d+/.exec(s)?.[0];
      assert.equal(frame(thrown.stderr), frame(alone.stderr));
    });
  });

  describe('writing and reading the cache', () => {
    it('writes the cache next to the bundle after a run; the next run uses it', async () => {
      const { entry, dir } = copyCli();
      const file = join(dir, CACHE_NAME);
      const first = await run(entry, ['--help']);
      assert.equal(state(first), 'miss');
      assert.equal(wrote(first), file);
      assert.ok(existsSync(file));
      assert.match(readFileSync(file).subarray(0, 256).toString('latin1'), /^lazypull-v8-cache\/1 [0-9a-f]{64} \d+ \d+\n/);
      assert.deepEqual(readdirSync(dir).sort(), ['main.bundle.js', CACHE_NAME, 'main.js'].sort(), 'no temp file left');

      const second = await run(entry, ['--help']);
      assert.deepEqual(second.cache, [`hit ${file}`], 'a hit writes nothing');
      assert.deepEqual(seen(second), seen(first));

      // Silent without the debug switch.
      const quiet = await run(entry, ['--help'], { env: { LAZYPULL_CODE_CACHE_DEBUG: '' } });
      assert.deepEqual(seen(quiet), seen(first));
      assert.equal(quiet.stderr, '');
      assert.deepEqual(quiet.cache, []);
    });

    it('keeps a file of its own for a process started with Node.js flags (V8 rejects a cache made under other flags)', async () => {
      const { entry, dir } = copyCli();
      const plain = await run(entry, ['--help']);
      assert.equal(wrote(plain), join(dir, CACHE_NAME));
      const flagged = await run(entry, ['--help'], { nodeFlags: ['--min-semi-space-size=16', '--max-semi-space-size=32'] });
      assert.equal(state(flagged), 'miss', flagged.cache.join('; '));
      const own = wrote(flagged);
      assert.match(own ?? '', /\/main\.bundle\.js\.[0-9a-f]{8}\.v8cache$/);
      assert.deepEqual(seen(flagged), seen(plain));
      // The plain file is untouched: the next run without flags still hits it.
      const again = await run(entry, ['--help']);
      assert.deepEqual(again.cache, [`hit ${join(dir, CACHE_NAME)}`]);
    });

    it('holds the functions a command ran: a pull writes more than --help', async () => {
      const help = copyCli();
      const pull = copyCli();
      await run(help.entry, ['--help']);
      const failed = await run(pull.entry, ['pull', '127.0.0.1:1/x:y', '--address', join(work, 'no-containerd.sock')]);
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /containerd socket .* does not exist/);
      assert.ok(readFileSync(join(pull.dir, CACHE_NAME)).length > readFileSync(join(help.dir, CACHE_NAME)).length * 2);
    });

    it('ignores a damaged cache file, runs the command the same and writes a good one', async () => {
      const { entry, dir } = copyCli();
      const file = join(dir, CACHE_NAME);
      const reference = await run(entry, ['pull', '--help']);
      const good = readFileSync(file);
      const eol = good.indexOf(10);
      const [format, key] = good.subarray(0, eol).toString('latin1').split(' ');
      const payload = good.subarray(eol + 1);
      const flipped = Buffer.from(good);
      flipped[eol + 1 + Math.floor(payload.length / 2)] ^= 0xff;
      const junk = Buffer.alloc(payload.length, 0x5a);
      const damaged: Array<[string, Buffer, string]> = [
        ['one byte of the payload flipped', flipped, 'corrupt'],
        ['truncated', good.subarray(0, good.length - 1000), 'corrupt'],
        ['header only', good.subarray(0, eol + 1), 'corrupt'],
        ['empty', Buffer.alloc(0), 'corrupt'],
        ['not a cache', Buffer.from('{"hello": "world"}\n'), 'corrupt'],
        // A file that passes lazypull's checks but that V8 refuses.
        ['junk with a valid header', Buffer.concat([Buffer.from(`${format} ${key} ${junk.length} ${crc32(junk) >>> 0}\n`, 'latin1'), junk]), 'rejected'],
      ];
      for (const [what, data, expected] of damaged) {
        writeFileSync(file, data);
        const r = await run(entry, ['pull', '--help']);
        assert.equal(state(r), expected, `${what}: ${r.cache.join('; ')}`);
        assert.deepEqual(seen(r), seen(reference), what);
        assert.equal(wrote(r), file, `${what}: replaced`);
        const next = await run(entry, ['pull', '--help']);
        assert.equal(state(next), 'hit', `${what}: the replacement is used`);
      }
    });

    it('does not serve the cache of a changed bundle', async () => {
      const { entry, dir } = copyCli();
      const bundle = join(dir, 'main.bundle.js');
      const file = join(dir, CACHE_NAME);
      const before = await run(entry, ['--help']);
      assert.match(before.stdout, /Lazy pulling of container images/);
      assert.equal(state(await run(entry, ['--help'])), 'hit');
      const oldCache = readFileSync(file);

      // Same length (V8 itself checks only the length of the source), other text: a rebuilt bundle.
      const source = readFileSync(bundle, 'latin1');
      assert.ok(source.includes('Lazy pulling of container images'));
      writeFileSync(bundle, source.replace('Lazy pulling of container images', 'LAZY PULLING OF CONTAINER IMAGES'), 'latin1');
      const changed = await run(entry, ['--help']);
      assert.equal(state(changed), 'stale', changed.cache.join('; '));
      assert.match(changed.stdout, /LAZY PULLING OF CONTAINER IMAGES/);
      assert.doesNotMatch(changed.stdout, /Lazy pulling of container images/);
      assert.equal(wrote(changed), file);
      assert.notDeepEqual(readFileSync(file), oldCache);
      const next = await run(entry, ['--help']);
      assert.equal(state(next), 'hit');
      assert.equal(next.stdout, changed.stdout);

      // Other Node.js flags make another key too (V8 would refuse the cache).
      const flagged = await run(entry, ['--help'], { env: { NODE_OPTIONS: '--max-old-space-size=512' } });
      assert.equal(state(flagged), 'stale');
      assert.equal(flagged.stdout, changed.stdout);
    });

    it('with LAZYPULL_CODE_CACHE=0 neither reads nor writes a cache', async () => {
      const { entry, dir } = copyCli();
      await run(entry, ['--help']);
      const before = readFileSync(join(dir, CACHE_NAME));
      writeFileSync(join(dir, 'main.bundle.js'), `${readFileSync(join(dir, 'main.bundle.js'), 'latin1')}\n// changed\n`, 'latin1');
      const off = await run(entry, ['--help'], { env: { LAZYPULL_CODE_CACHE: '0' } });
      assert.deepEqual(off.cache, ['off']);
      assert.equal(off.code, 0);
      assert.deepEqual(readFileSync(join(dir, CACHE_NAME)), before);
    });

    it('runs the command the same when the cache cannot be written', async () => {
      const { entry } = copyCli();
      const reference = await run(entry, ['pull', 'BAD REF!'], { env: { LAZYPULL_CODE_CACHE: '0' } });
      const r = await run(entry, ['pull', 'BAD REF!'], { env: { LAZYPULL_CODE_CACHE_DIR: join(work, 'no', 'such', 'dir') } });
      assert.equal(state(r), 'miss');
      assert.equal(wrote(r), undefined);
      assert.deepEqual(seen(r), seen(reference));
      assert.equal(r.code, 1);
    });
  });

  describe('where the cache lives', () => {
    it('uses LAZYPULL_CODE_CACHE_DIR when set', async () => {
      const { entry, dir } = copyCli();
      const own = join(work, 'own-cache');
      mkdirSync(own);
      const first = await run(entry, ['--help'], { env: { LAZYPULL_CODE_CACHE_DIR: own } });
      assert.equal(wrote(first), join(own, CACHE_NAME));
      assert.equal(existsSync(join(dir, CACHE_NAME)), false);
      assert.equal(state(await run(entry, ['--help'], { env: { LAZYPULL_CODE_CACHE_DIR: own } })), 'hit');
    });

    it("falls back to a private $TMPDIR/lazypull-v8-cache when the bundle's folder is not writable", async function () {
      requireRoot(this);
      const { entry, dir } = copyCli();
      const tmp = join(work, 'tmp-nobody');
      mkdirSync(tmp);
      chmodSync(tmp, 0o1777);
      const env = { TMPDIR: tmp };
      const first = await run(entry, ['--help'], { uid: NOBODY, env, cwd: tmp });
      assert.equal(first.code, 0, first.stderr);
      assert.equal(state(first), 'miss');
      const cacheDir = join(tmp, 'lazypull-v8-cache');
      const written = wrote(first);
      assert.ok(written?.startsWith(`${cacheDir}/`), first.cache.join('; '));
      assert.match(written!, /\/[0-9a-f]{16}-main\.bundle\.js\.v8cache$/);
      const st = lstatSync(cacheDir);
      assert.equal(st.uid, NOBODY);
      assert.equal(st.mode & 0o777, 0o700);
      assert.equal(existsSync(join(dir, CACHE_NAME)), false);
      const second = await run(entry, ['--help'], { uid: NOBODY, env, cwd: tmp });
      assert.equal(state(second), 'hit');
      assert.deepEqual(seen(second), seen(first));
    });

    it('does not use a temp cache folder that is not private to the user', async function () {
      requireRoot(this);
      const { entry } = copyCli();
      // A valid cache for this bundle, made by nobody in its own folder...
      const ownTmp = join(work, 'tmp-made');
      mkdirSync(ownTmp);
      chmodSync(ownTmp, 0o1777);
      const made = wrote(await run(entry, ['--help'], { uid: NOBODY, env: { TMPDIR: ownTmp }, cwd: ownTmp }));
      assert.ok(made);
      // ...planted where anybody can write: it must not be used.
      const tmp = join(work, 'tmp-shared');
      const shared = join(tmp, 'lazypull-v8-cache');
      mkdirSync(shared, { recursive: true });
      chmodSync(tmp, 0o1777);
      chmodSync(shared, 0o777);
      const planted = join(shared, made!.split('/').pop()!);
      copyFileSync(made!, planted);
      const r = await run(entry, ['--help'], { uid: NOBODY, env: { TMPDIR: tmp }, cwd: tmp });
      assert.equal(state(r), 'untrusted', r.cache.join('; '));
      assert.equal(wrote(r), undefined);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^Usage: lazypull/);
      assert.deepEqual(readdirSync(shared), [planted.split('/').pop()]);
    });
  });

  it('npm run build leaves a cache that the built CLI uses', async () => {
    const r = await run(CLI_PATH, ['--help']);
    assert.deepEqual(r.cache, [`hit ${join(BUILT_DIR, CACHE_NAME)}`]);
    assert.equal(r.code, 0);
  });
});
