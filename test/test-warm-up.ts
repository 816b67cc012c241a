/**
 * The standby layer server's warm-up: it must run the real code paths (a
 * warm-up that quietly stopped working would only show as a slower start)
 * and leave nothing behind.
 */
import assert from 'node:assert/strict';
import { warmUpLayerOpening, warmUpRegistryReads } from '../src/fs/warm-up';

function openHandles(): string[] {
  return process.getActiveResourcesInfo().filter((r) => /TCP|Server|Socket/i.test(r));
}

describe('standby warm-up', function () {
  it('indexes a synthetic TOC with the real parser and index', function () {
    assert.doesNotThrow(() => warmUpLayerOpening(1, 500));
  });

  it('reads blob tails through the registry client from a server of its own on 127.0.0.1, then closes both', async function () {
    const before = openHandles().length;
    assert.equal(await warmUpRegistryReads(3), 3, 'every read accepted by the registry client');
    // Closed handles leave the list once libuv has run their close callbacks.
    for (let i = 0; i < 100 && openHandles().length > before; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(openHandles().length, before, `left open: ${openHandles().join(', ')}`);
  });
});
