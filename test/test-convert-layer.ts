/**
 * convert-layer and toc, end to end through the CLI: the round trip is
 * checked with system gzip and GNU tar, not with lazypull's own parser.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import pako from 'pako';
import { pack } from 'tar-stream';
import { runCli, runCliOk } from './support/cli';
import { appLayer, gzipFile, stageLayer, tarDirectory, whiteoutLayer, type LayerEntry } from './support/oci-image';
import { requireBinary, requireRoot } from './support/require-env';
import { compareTars, ESTARGZ_ONLY_NAMES } from './support/tar-compare';

const execFileP = promisify(execFile);

interface TocEntryJson {
  name: string;
  type: string;
  size?: number;
  offset?: number;
  chunkOffset?: number;
  chunkSize?: number;
  chunkDigest?: string;
  digest?: string;
  linkName?: string;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

async function sh(script: string, ...args: string[]): Promise<Buffer> {
  const { stdout } = await execFileP('bash', ['-c', `set -o pipefail; ${script}`, 'bash', ...args], { encoding: 'buffer', maxBuffer: 512 << 20 });
  return stdout;
}

/** Verbose listings of a tar by GNU tar, minus the entries only eStargz adds. */
async function tarListing(path: string): Promise<string[]> {
  const out = await sh('gzip -dc < "$1" | tar --list -vv --numeric-owner --full-time --xattrs --xattrs-include="*" -f -', path);
  return out
    .toString('utf8')
    .split('\n')
    .filter((l) => l !== '' && !ESTARGZ_ONLY_NAMES.some((n) => l.includes(` ${n}`)));
}

/** Every entry kind the format has, plus long, non-ASCII and large names and files. */
function everyKindLayer(): LayerEntry[] {
  return [
    ...appLayer(),
    { type: 'file', path: `deep/${'nested-dir-name/'.repeat(12)}file-after-a-very-long-path.txt`, content: 'deep\n' },
    { type: 'file', path: 'owners/big-ids', content: 'ids\n', uid: 3_000_000, gid: 4_000_000 },
    { type: 'file', path: 'owners/sticky-dir-file', content: 'x', mode: 0o1644 },
    { type: 'file', path: 'non-ascii/日本語/ファイル.txt', content: 'こんにちは\n' },
    { type: 'dir', path: 'non-ascii/ünïcödé-dïr', mode: 0o700 },
    ...whiteoutLayer().filter((e) => e.type !== 'whiteout'),
    { type: 'file', path: 'etc/group', content: 'placeholder\n' },
    { type: 'whiteout', path: 'etc/removed' },
  ];
}

describe('convert-layer', function () {
  let work: string;
  let inputGz: string;

  before(async function () {
    requireRoot(this);
    requireBinary(this, 'tar');
    requireBinary(this, 'gzip');
    work = await mkdtemp(join(tmpdir(), 'lzp-convert-layer-'));
    const stage = join(work, 'stage');
    await execFileP('mkdir', [stage]);
    await stageLayer(stage, everyKindLayer());
    await tarDirectory(stage, join(work, 'input.tar'));
    inputGz = join(work, 'input.tar.gz');
    await gzipFile(join(work, 'input.tar'), inputGz);
  });

  after(async function () {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe('round trip of a layer with every entry kind', function () {
    const chunkSize = 256 * 1024;
    let output: string;
    let blob: Buffer;
    let printed: { digest: string; size: number; diffID: string; tocDigest: string; uncompressedSize: number };
    let toc: { version: number; entries: TocEntryJson[] };

    before(async function () {
      output = join(work, 'out.estargz.tar.gz');
      const result = await runCliOk(['convert-layer', inputGz, output, '--chunk-size', String(chunkSize), '--level', '6', '--json']);
      printed = JSON.parse(result.stdout);
      blob = await readFile(output);
      toc = JSON.parse((await sh('gzip -dc < "$1" | tar -xO -f - stargz.index.json', output)).toString('utf8'));
    });

    it('prints exactly the documented JSON fields', function () {
      assert.deepEqual(Object.keys(printed).sort(), ['diffID', 'digest', 'size', 'tocDigest', 'uncompressedSize']);
    });

    it('is one valid gzip stream whose tar equals the input, entry for entry', async function () {
      await sh('gzip -t "$1"', output);
      assert.deepEqual(await tarListing(output), await tarListing(inputGz));
      assert.deepEqual(await compareTars(inputGz, output), []);
    });

    it('prints digest, size, diffID and uncompressedSize of what it wrote', async function () {
      assert.equal(printed.digest, sha256(blob));
      assert.equal(printed.size, blob.length);
      const tar = await sh('gzip -dc < "$1"', output);
      assert.equal(printed.diffID, sha256(tar));
      assert.equal(printed.uncompressedSize, tar.length);
    });

    it('prints the sha256 of the stored TOC JSON as tocDigest', async function () {
      const stored = await sh('gzip -dc < "$1" | tar -xO -f - stargz.index.json', output);
      assert.equal(printed.tocDigest, sha256(stored));
      const viaCommand = await runCliOk(['toc', output]);
      assert.equal(sha256(Buffer.from(viaCommand.stdout.replace(/\n$/, stored.at(-1) === 0x0a ? '\n' : ''))), printed.tocDigest);
    });

    it('ends with a 51-byte footer pointing at the TOC member', function () {
      const footer = blob.subarray(blob.length - 51);
      const inflator = new pako.Inflate();
      inflator.push(footer, true);
      const extra = Buffer.from((inflator as unknown as { header: { extra: Uint8Array } }).header.extra);
      assert.equal(extra.toString('latin1', 0, 2), 'SG');
      assert.match(extra.toString('latin1', 4), /^[0-9a-f]{16}STARGZ$/);
      const tocOffset = parseInt(extra.toString('latin1', 4, 20), 16);
      const tocTar = gunzipSync(blob.subarray(tocOffset, blob.length - 51));
      assert.equal(tocTar.toString('latin1', 0, 17), 'stargz.index.json');
    });

    it('has a TOC entry for every input entry and starts with the no-prefetch landmark', async function () {
      assert.equal(toc.version, 1);
      assert.equal(toc.entries[0].name, '.no.prefetch.landmark');
      const inputNames = (await sh('gzip -dc < "$1" | tar --list -f -', inputGz)).toString('utf8').split('\n').filter(Boolean)
        .map((n) => n.replace(/^\.\//, '').replace(/\/$/, ''));
      const tocNames = new Set(toc.entries.filter((e) => e.type !== 'chunk').map((e) => e.name.replace(/\/$/, '')));
      for (const name of inputNames) assert.ok(tocNames.has(name), `TOC lacks ${name}`);
      const kinds = new Set(toc.entries.map((e) => e.type));
      for (const kind of ['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk']) assert.ok(kinds.has(kind), `no ${kind} entry`);
    });

    it('gives every chunk a member that decompresses on its own to bytes matching chunkDigest', async function () {
      const extracted = join(work, 'extracted');
      await execFileP('mkdir', ['-p', extracted]);
      await sh('gzip -dc < "$1" | tar -x -C "$2" -f -', output, extracted);
      const files = new Map<string, TocEntryJson[]>();
      for (const e of toc.entries) {
        if (e.type === 'reg' || e.type === 'chunk') files.set(e.name, [...(files.get(e.name) ?? []), e]);
      }
      const memberEnds = toc.entries.map((e) => e.offset).filter((o): o is number => o !== undefined).sort((a, b) => a - b);
      const footer = new pako.Inflate();
      footer.push(blob.subarray(blob.length - 51), true);
      const tocOffset = parseInt(Buffer.from((footer as unknown as { header: { extra: Uint8Array } }).header.extra).toString('latin1', 4, 20), 16);
      let multiChunk = 0;
      for (const [name, chunks] of files) {
        if (name === '.no.prefetch.landmark') continue;
        const content = await readFile(join(extracted, name));
        const reg = chunks[0];
        assert.equal(reg.digest, sha256(content), `${name}: digest`);
        if (content.length === 0) {
          assert.equal(reg.offset, undefined, `${name}: empty files have no offset`);
          continue;
        }
        if (chunks.length > 1) multiChunk++;
        for (const chunk of chunks) {
          const start = chunk.chunkOffset ?? 0;
          const size = chunk.chunkSize || content.length - start;
          // Decompress from `offset` up to the next member that starts a chunk (or the TOC).
          const end = memberEnds.find((o) => o > chunk.offset!) ?? tocOffset;
          const member = gunzipSync(blob.subarray(chunk.offset!, end)).subarray(0, size);
          assert.equal(chunk.chunkDigest, sha256(member), `${name} @${start}: chunkDigest`);
          assert.equal(Buffer.compare(member, content.subarray(start, start + size)), 0, `${name} @${start}: bytes`);
        }
      }
      assert.ok(multiChunk >= 2, 'the layer has files split into several chunks');
    });

    it('records hardlinks, symlinks, devices and xattrs in the TOC', function () {
      const byName = new Map(toc.entries.map((e) => [e.name, e as TocEntryJson & Record<string, unknown>]));
      const sym = byName.get('app/hello-sym')!;
      assert.equal(sym.type, 'symlink');
      assert.equal(sym.linkName, 'hello.txt');
      const links = toc.entries.filter((e) => e.type === 'hardlink');
      assert.equal(links.length, 1);
      assert.ok(['app/hello.txt', 'app/hello-link.txt'].includes(links[0].linkName!));
      const blk = byName.get('app/dev/loop-copy')!;
      assert.equal(blk.type, 'block');
      assert.equal(blk.devMajor, 7);
      const xattrs = byName.get('app/with-xattrs')!.xattrs as Record<string, string>;
      assert.equal(Buffer.from(xattrs['user.lazypull.test'], 'base64').toString(), 'yes');
      assert.deepEqual([...Buffer.from(xattrs['trusted.lazypull.bin'], 'base64')], [0, 1, 2, 255]);
      assert.equal(byName.get('app/setuid-tool')!.mode, 0o4755);
      assert.equal(byName.get('owners/big-ids')!.uid, 3_000_000);
      assert.ok(byName.has('app/shared/.wh..wh..opq'));
      assert.ok(byName.has('etc/.wh.removed'));
      assert.ok(byName.has('app/shared/'), 'directory names end with a slash');
    });
  });

  it('accepts a plain (uncompressed) tar', async function () {
    const out = join(work, 'from-plain.tar.gz');
    await runCliOk(['convert-layer', join(work, 'input.tar'), out, '--level', '1']);
    assert.deepEqual(await compareTars(inputGz, out), []);
  });

  it('puts prioritized files first, with their directories, then the prefetch landmark', async function () {
    const list = join(work, 'prioritize.txt');
    await writeFile(list, '/app/data/medium.txt\napp/hello-sym\n/does/not/exist\n');
    const out = join(work, 'prioritized.tar.gz');
    await runCliOk(['convert-layer', inputGz, out, '--prioritize', list, '--level', '1']);
    const toc = JSON.parse((await sh('gzip -dc < "$1" | tar -xO -f - stargz.index.json', out)).toString('utf8')) as { entries: TocEntryJson[] };
    const names = toc.entries.filter((e) => e.type !== 'chunk').map((e) => e.name);
    assert.deepEqual(names.slice(0, 5), ['app/', 'app/data/', 'app/data/medium.txt', 'app/hello-sym', '.prefetch.landmark']);
    assert.ok(!names.includes('.no.prefetch.landmark'));
    // Same entries in another order. (Extracted trees may differ in directory mtimes under GNU tar,
    // which sets a directory's time when it leaves it; containerd sets them after the whole layer.)
    assert.deepEqual((await tarListing(out)).sort(), (await tarListing(inputGz)).sort());
  });

  it('converts an eStargz layer again without duplicating the TOC or landmarks', async function () {
    const once = join(work, 'once.tar.gz');
    const twice = join(work, 'twice.tar.gz');
    await runCliOk(['convert-layer', inputGz, once, '--level', '1']);
    await runCliOk(['convert-layer', once, twice, '--level', '1']);
    const names = (await sh('gzip -dc < "$1" | tar --list -f -', twice)).toString('utf8').split('\n');
    assert.equal(names.filter((n) => n === 'stargz.index.json').length, 1);
    assert.equal(names.filter((n) => n === '.no.prefetch.landmark').length, 1);
    assert.deepEqual(await compareTars(inputGz, twice), []);
  });

  describe('toc', function () {
    it('reads a blob with the legacy 47-byte footer', async function () {
      const modern = await readFile(join(work, 'once.tar.gz'));
      const inflator = new pako.Inflate();
      inflator.push(modern.subarray(modern.length - 51), true);
      const payload = Buffer.from((inflator as unknown as { header: { extra: Uint8Array } }).header.extra).subarray(4);
      const legacyFooter = Buffer.from(pako.gzip(new Uint8Array(0), { level: 0, header: { extra: Array.from(payload) } } as pako.DeflateFunctionOptions));
      assert.equal(legacyFooter.length, 47);
      const legacy = join(work, 'legacy.tar.gz');
      await writeFile(legacy, Buffer.concat([modern.subarray(0, modern.length - 51), legacyFooter]));
      const viaLegacy = await runCliOk(['toc', legacy]);
      const viaModern = await runCliOk(['toc', join(work, 'once.tar.gz')]);
      assert.equal(viaLegacy.stdout, viaModern.stdout);
    });

    it('says clearly that a plain tar.gz is not eStargz', async function () {
      const result = await runCli(['toc', inputGz]);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /not an eStargz blob/);
      assert.ok(result.stderr.includes(inputGz));
      assert.equal(result.stdout, '');
    });
  });

  describe('bad input', function () {
    let bad: string;

    before(async function () {
      bad = await mkdtemp(join(work, 'bad-'));
    });

    async function tarOf(entries: Array<{ name: string; content?: string; type?: 'file' | 'directory' | 'link'; linkname?: string }>): Promise<Buffer> {
      const packer = pack();
      const chunks: Buffer[] = [];
      const done = (async () => {
        for await (const c of packer) chunks.push(c as Buffer);
      })();
      for (const e of entries) packer.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname, mode: 0o644 }, e.content ?? '');
      packer.finalize();
      await done;
      return Buffer.concat(chunks);
    }

    async function expectFailure(name: string, data: Buffer, pattern: RegExp, entry?: string): Promise<void> {
      const input = join(bad, name);
      await writeFile(input, data);
      const out = join(bad, `${name}.out`);
      const before = (await readdir(bad)).sort();
      const result = await runCli(['convert-layer', input, out]);
      assert.notEqual(result.code, 0, `${name}: must fail`);
      assert.match(result.stderr, pattern, `${name}: ${result.stderr}`);
      assert.ok(result.stderr.includes(input), `${name}: error names the layer: ${result.stderr}`);
      if (entry) assert.ok(result.stderr.includes(entry), `${name}: error names the entry: ${result.stderr}`);
      assert.deepEqual((await readdir(bad)).sort(), before, `${name}: nothing left behind`);
    }

    it('refuses a truncated gzip stream', async function () {
      const full = await readFile(inputGz);
      await expectFailure('truncated.tar.gz', full.subarray(0, Math.floor(full.length / 2)), /truncated/);
    });

    it('refuses a corrupt gzip stream', async function () {
      const full = Buffer.from(await readFile(inputGz));
      for (let i = 2000; i < 2400; i++) full[i] ^= 0x5a;
      await expectFailure('corrupt.tar.gz', full, /corrupt|invalid|truncated|checksum/);
    });

    it('refuses a stream that is not tar', async function () {
      await expectFailure('not-tar.gz', gzipSync(Buffer.from('this is not a tar archive\n'.repeat(100))), /not a tar archive/);
    });

    it('refuses an absolute entry name', async function () {
      await expectFailure('absolute.tar', await tarOf([{ name: '/etc/passwd', content: 'x' }]), /absolute or escapes/, '/etc/passwd');
    });

    it('refuses a name that climbs out of the root after normalisation', async function () {
      await expectFailure('dotdot.tar', await tarOf([{ name: 'a/../../evil', content: 'x' }]), /absolute or escapes/, 'a/../../evil');
    });

    it('refuses a hardlink whose target escapes the root', async function () {
      await expectFailure('link-escape.tar', await tarOf([{ name: 'ok', type: 'link', linkname: '../../etc/shadow' }]), /escapes/, '../../etc/shadow');
    });

    it('refuses duplicate names', async function () {
      const data = await tarOf([{ name: 'dir/file', content: 'one' }, { name: './dir/file', content: 'two' }]);
      await expectFailure('duplicate.tar', data, /duplicate entry/, 'dir/file');
    });

    it('refuses a tar cut off in the middle of a file', async function () {
      const data = await tarOf([{ name: 'file', content: 'y'.repeat(5000) }]);
      await expectFailure('cut.tar', data.subarray(0, 2048), /truncated/, 'file');
    });

    it('refuses a compression level out of range without writing anything', async function () {
      const out = join(bad, 'level.out');
      const result = await runCli(['convert-layer', inputGz, out, '--level', '12']);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /level/);
      assert.deepEqual((await readdir(bad)).filter((n) => n.startsWith('level')), []);
    });
  });
});
