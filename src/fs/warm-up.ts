/**
 * JIT warm-up for a standby layer server. Opening a layer spends most of
 * its CPU in a few functions run once per TOC entry (validation, tree
 * building); run cold, in V8's interpreter, they take several times longer
 * than once optimized. A standby server runs them over a synthetic TOC
 * while it waits, so the real layer is indexed by optimized code.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { parseToc, type Toc, type TocEntry } from '../format/toc';
import { LayerIndex } from './layer-index';

const FAKE_DIGEST = `sha256:${'0'.repeat(64)}`;

/** A TOC shaped like a real root filesystem's: directories, files, chunked files, symlinks, hardlinks, xattrs. */
function syntheticToc(files: number): Toc {
  const entries: TocEntry[] = [{ name: './', type: 'dir', mode: 0o755 }];
  let offset = 1000;
  for (let d = 0; d * 50 < files; d++) {
    const dir = `usr/lib/pkg${d}`;
    entries.push({ name: `${dir}/`, type: 'dir', mode: 0o755, modtime: `2024-01-0${(d % 9) + 1}T00:00:00Z` });
    for (let f = 0; f < 50; f++) {
      const name = `${dir}/file${f}.so`;
      if (f % 10 === 9) {
        entries.push({ name, type: 'symlink', linkName: `file${f - 1}.so`, mode: 0o777 });
      } else if (f % 25 === 24) {
        entries.push({ name, type: 'hardlink', linkName: `${dir}/file0.so` });
      } else {
        const size = f % 20 === 0 ? 8192 : 512;
        const entry: TocEntry = { name, type: 'reg', size, mode: 0o644, modtime: '2024-01-01T00:00:00Z', offset, digest: FAKE_DIGEST, chunkDigest: FAKE_DIGEST };
        if (f % 7 === 0) entry.xattrs = { 'user.note': 'eQ==' };
        if (size === 8192) {
          entry.chunkSize = 4096;
          entries.push(entry, { name, type: 'chunk', offset: offset + 300, chunkOffset: 4096, chunkSize: 4096, chunkDigest: FAKE_DIGEST });
          offset += 600;
        } else {
          entries.push(entry);
          offset += 300;
        }
      }
    }
  }
  return { version: 1, entries };
}

/** Run the layer-opening code over a synthetic TOC a few times; returns when done (some 100 ms of CPU). */
export function warmUpLayerOpening(rounds = 4, files = 2000): void {
  const json = Buffer.from(JSON.stringify(syntheticToc(files)));
  const compressed = gzipSync(json);
  for (let i = 0; i < rounds; i++) {
    const toc = parseToc(gunzipSync(compressed));
    new LayerIndex(toc, { tocOffset: 1_000_000_000, label: 'warm-up' });
  }
}
