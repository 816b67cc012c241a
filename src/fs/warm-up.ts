/**
 * JIT warm-up for a standby layer server. Opening a layer spends most of
 * its CPU in a few functions run once per TOC entry (validation, tree
 * building); run cold, in V8's interpreter, they take several times longer
 * than once optimized. A standby server runs them over a synthetic TOC
 * while it waits, so the real layer is indexed by optimized code. It also
 * reads a few blob tails over HTTP from itself, so that the real layer's
 * first request does not pay for the HTTP client's first use.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync, gzipSync } from 'node:zlib';
import { parseToc, serializeToc, type Toc, type TocEntry } from '../format/toc';
import { RegistryClient } from '../registry/client';
import { parseReference } from '../registry/reference';
import { LayerIndex } from './layer-index';

const FAKE_DIGEST = `sha256:${'0'.repeat(64)}`;

/**
 * A TOC shaped like a real root filesystem's: directories, files, chunked
 * files, symlinks, hardlinks, xattrs, each entry with the fields a
 * converter writes and in the order it writes them (serializeToc), so that
 * JSON.parse gives its objects the same shapes as a real TOC's and the
 * optimized code fits them.
 */
function syntheticToc(files: number): Toc {
  const modtime = (n: number): string => `2024-01-0${(n % 9) + 1}T00:00:00Z`;
  const entries: TocEntry[] = [{ name: './', type: 'dir', modtime: modtime(0), mode: 0o755 }];
  let offset = 1000;
  for (let d = 0; d * 50 < files; d++) {
    const dir = `usr/lib/pkg${d}`;
    entries.push({ name: `${dir}/`, type: 'dir', modtime: modtime(d), mode: 0o755 });
    for (let f = 0; f < 50; f++) {
      const name = `${dir}/file${f}.so`;
      if (f % 10 === 9) {
        entries.push({ name, type: 'symlink', modtime: modtime(f), linkName: `file${f - 1}.so`, mode: 0o777 });
      } else if (f % 25 === 24) {
        entries.push({ name, type: 'hardlink', modtime: modtime(f), linkName: `${dir}/file0.so`, mode: 0o644 });
      } else {
        const size = f % 20 === 0 ? 8192 : 512;
        const entry: TocEntry = { name, type: 'reg', size, modtime: modtime(f), mode: 0o644, offset, digest: FAKE_DIGEST, chunkDigest: FAKE_DIGEST };
        if (f % 7 === 0) entry.xattrs = { 'user.note': 'eQ==' };
        if (size === 8192) {
          entry.chunkSize = 4096;
          entries.push(entry, { name, type: 'chunk', offset: offset + 300, chunkOffset: 4096, chunkDigest: FAKE_DIGEST });
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
  const compressed = gzipSync(serializeToc(syntheticToc(files)));
  for (let i = 0; i < rounds; i++) {
    const toc = parseToc(gunzipSync(compressed));
    new LayerIndex(toc, { tocOffset: 1_000_000_000, label: 'warm-up' });
  }
}

/**
 * Read a blob's tail a few times through the registry client from an HTTP
 * server in this process, on 127.0.0.1 (nothing leaves the machine). The
 * first request of a process costs 15-25 ms more than the next ones
 * (undici compiles its WebAssembly HTTP parser, the client's code runs
 * cold): measured on a layer's TOC read, which is on the critical path of
 * a lazy start. Failures are ignored (this only warms code up); returns
 * how many reads succeeded.
 */
export async function warmUpRegistryReads(rounds = 3): Promise<number> {
  const blobSize = 1 << 20;
  const tail = Buffer.alloc(16 * 1024, 0x5a);
  const server = createServer((_req, res) => {
    res.writeHead(206, {
      'content-type': 'application/octet-stream',
      'content-length': tail.length,
      'content-range': `bytes ${blobSize - tail.length}-${blobSize - 1}/${blobSize}`,
    });
    res.end(tail);
  });
  const client = new RegistryClient({ plainHttp: true, retries: 0, timeoutMs: 5000 });
  let reads = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const { port } = server.address() as AddressInfo;
    const ref = parseReference(`127.0.0.1:${port}/lazypull/warm-up`);
    for (let i = 0; i < rounds; i++) {
      const { data, blobSize: size } = await client.getBlobTail(ref, FAKE_DIGEST, tail.length);
      if (data.equals(tail) && size === blobSize) reads++;
    }
  } catch {
    // Nothing to warm up then; the real read works the same.
  } finally {
    await client.close().catch(() => undefined);
    await new Promise((resolve) => server.close(resolve));
  }
  return reads;
}
