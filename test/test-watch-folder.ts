/**
 * watchFolder (src/util/watch-folder.ts), which wakes the snapshotter when a
 * layer server renames its status file into place: a rename wakes the
 * waiter, a change made before the wait is not lost, a quiet folder times
 * out, and a folder that cannot be watched only times out.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchFolder } from '../src/util/watch-folder';

describe('watchFolder', function () {
  let dir: string;
  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'lzp-watch-folder-'));
  });
  afterEach(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  it('a file renamed into the folder wakes the waiter', async function () {
    const changes = watchFolder(dir);
    try {
      const woken = changes.next(60_000);
      writeFileSync(join(dir, 'status.json.tmp'), '{}');
      renameSync(join(dir, 'status.json.tmp'), join(dir, 'status.json'));
      assert.equal(await woken, true);
    } finally {
      changes.close();
    }
  });

  it('a change before the wait is not lost; a quiet folder times out', async function () {
    const changes = watchFolder(dir);
    try {
      writeFileSync(join(dir, 'a'), 'x');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await changes.next(60_000), true, 'the earlier change counts');
      assert.equal(await changes.next(50), false, 'nothing changed since');
    } finally {
      changes.close();
    }
  });

  it('a folder that does not exist only times out', async function () {
    const changes = watchFolder(join(dir, 'missing'));
    try {
      assert.equal(await changes.next(20), false);
    } finally {
      changes.close();
    }
  });
});
