/**
 * docs/benchmarks.md's writer (bench/benchmarks-doc.ts): a benchmark
 * rewrites its own section only; the other sections and the notes written
 * by hand under the title stay as they were.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { updateBenchmarksDoc } from '../bench/benchmarks-doc';

describe('docs/benchmarks.md writer', function () {
  let dir: string;
  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'lzp-bench-doc-'));
  });
  afterEach(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('rewrites one section and keeps the others and the notes under the title', async function () {
    const path = join(dir, 'benchmarks.md');
    writeFileSync(
      path,
      ['# Benchmarks', '', '## Notes by hand', '', '| a | b |', '', '<!-- bench:cold-start -->', 'old cold', '<!-- /bench:cold-start -->', '', '<!-- bench:rollout -->', 'old rollout', '<!-- /bench:rollout -->', ''].join('\n'),
    );
    await updateBenchmarksDoc('rollout', 'new rollout', path);
    const text = readFileSync(path, 'utf8');
    assert.ok(text.startsWith('# Benchmarks\n\n## Notes by hand\n\n| a | b |\n\n<!-- bench:cold-start -->'), text);
    assert.match(text, /<!-- bench:cold-start -->\nold cold\n<!-- \/bench:cold-start -->/);
    assert.match(text, /<!-- bench:rollout -->\nnew rollout\n<!-- \/bench:rollout -->/);
    assert.doesNotMatch(text, /old rollout/);
  });

  it('a new document gets the title and the section', async function () {
    const path = join(dir, 'new.md');
    await updateBenchmarksDoc('conversion', 'numbers', path);
    assert.equal(readFileSync(path, 'utf8'), '# Benchmarks\n\n<!-- bench:conversion -->\nnumbers\n<!-- /bench:conversion -->\n');
  });
});
