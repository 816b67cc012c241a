/**
 * The rollout benchmark's app layer: the top layer that changes from v1 to
 * v2. Two kinds:
 *
 * - `vendored` (the default): the app's code plus its dependencies, as an
 *   image built with `COPY . /app` after `pip install --target /app/vendor`
 *   ships them: one layer that changes whenever the code does. The
 *   dependencies are real files (Python modules, shared libraries, message
 *   catalogues) taken from the base root filesystem and placed under
 *   /app/vendor/usr/, about 100 MB unpacked; the app imports `json` from
 *   there, so it reads a few of them at start-up.
 * - `code-only`: just /app/server.py and /app/VERSION (a few hundred bytes).
 *
 * LAZYPULL_BENCH_APP_LAYER picks one.
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract, type Header } from 'tar-stream';
import type { TarEntrySpec } from '../src/image/pack-tar';

export type AppLayerKind = 'vendored' | 'code-only';

export function appLayerKind(): AppLayerKind {
  const kind = process.env.LAZYPULL_BENCH_APP_LAYER ?? 'vendored';
  if (kind !== 'vendored' && kind !== 'code-only') throw new Error(`LAZYPULL_BENCH_APP_LAYER must be vendored or code-only, not ${JSON.stringify(kind)}`);
  return kind;
}

/** Base root filesystem folders copied into the app layer, as the app's dependencies. */
const VENDORED_FROM = ['usr/lib/python3.11/', 'usr/lib/x86_64-linux-gnu/', 'usr/share/locale/'];
export const VENDOR_DIR = 'app/vendor';
/** Where the app finds its Python dependencies. */
export const VENDOR_PYTHON_PATH = `/${VENDOR_DIR}/usr/lib/python3.11`;
/**
 * What the app reads from its vendored copy at start-up (for --prioritize):
 * `import json` and what json imports in turn (re, copyreg), as the layer
 * server's request log shows it (`LAZYPULL_DEBUG=fuse`).
 */
export const VENDOR_STARTUP_FILES = [
  ...['__init__', 'decoder', 'scanner', 'encoder'].map((m) => `json/__pycache__/${m}.cpython-311.pyc`),
  ...['__init__', '_compiler', '_parser', '_constants', '_casefix'].map((m) => `re/__pycache__/${m}.cpython-311.pyc`),
  '__pycache__/copyreg.cpython-311.pyc',
].map((file) => `${VENDOR_PYTHON_PATH}/${file}`);

export interface VendoredDependencies {
  entries: TarEntrySpec[];
  files: number;
  bytes: number;
}

function vendoredName(name: string): string | undefined {
  const clean = name.replace(/^\.?\//, '');
  return VENDORED_FROM.some((dir) => clean.startsWith(dir)) ? `${VENDOR_DIR}/${clean}` : undefined;
}

/** The vendored folders of the base layer (a tar.gz), renamed under /app/vendor, in their tar order, with parent directories first. */
export async function vendoredDependencies(baseLayerPath: string): Promise<VendoredDependencies> {
  const entries: TarEntrySpec[] = [];
  // app/ itself comes first in the app layer, with the app's code.
  const parents = new Set<string>(['app/']);
  const addParents = (name: string): void => {
    const parts = name.replace(/\/$/, '').split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = `${parts.slice(0, i).join('/')}/`;
      if (parents.has(dir)) continue;
      parents.add(dir);
      entries.push({ header: { name: dir, type: 'directory', mode: 0o755 } });
    }
  };
  let files = 0;
  let bytes = 0;
  const tar = extract();
  const done = (async () => {
    for await (const entry of tar) {
      const h: Header = entry.header;
      const name = vendoredName(h.name);
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      if (name === undefined) continue;
      const header = { name, type: h.type, mode: h.mode, mtime: h.mtime, linkname: h.linkname };
      if (h.type === 'link') {
        // A hard link must point inside the copy, or the layer would not unpack.
        const target = h.linkname === null || h.linkname === undefined ? undefined : vendoredName(h.linkname);
        if (target === undefined) continue;
        header.linkname = target;
      }
      if (h.type !== 'file' && h.type !== 'directory' && h.type !== 'symlink' && h.type !== 'link') continue;
      addParents(name);
      if (h.type === 'directory') {
        if (parents.has(name.endsWith('/') ? name : `${name}/`)) continue;
        parents.add(name.endsWith('/') ? name : `${name}/`);
      }
      const content = h.type === 'file' ? Buffer.concat(chunks) : undefined;
      if (content !== undefined) {
        files++;
        bytes += content.length;
      }
      entries.push({ header, content });
    }
  })();
  // A read or gunzip error destroys the extractor, which ends the loop above with it.
  await Promise.all([done, pipeline(createReadStream(baseLayerPath), createGunzip(), tar)]);
  if (files === 0) throw new Error(`no files under ${VENDORED_FROM.join(', ')} in ${baseLayerPath}`);
  return { entries, files, bytes };
}
