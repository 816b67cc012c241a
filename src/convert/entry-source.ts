/**
 * Where the converter's entries come from, in the order they are written:
 * straight from the input stream, or, with a prioritized file list,
 * reordered so that the listed files (with the directories and hardlink
 * targets they need) come first. Both check every entry on the way: names
 * must stay inside the root and appear once.
 */
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { isLazypullError, LazypullError } from '../errors';
import { cleanEntryName, parentNames, requireCleanName } from '../format/entry-name';
import { NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME } from '../format/toc';
import { TarReader, type TarEntry } from '../format/tar-reader';
import type { LayerEntry } from './estargz-writer';
import { detectCompression, gzipError } from './layer-input';

/** Entries a converter writes itself; copies found in the input are dropped (re-conversion). */
const GENERATED_NAMES = new Set([TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK]);

/** Checks names as entries go by; `accept` returns null for entries to drop. */
export class EntryChecker {
  private readonly seen = new Set<string>();

  constructor(private readonly layer: string) {}

  accept(entry: TarEntry): { cleanName: string; cleanLinkName?: string } | null {
    const h = entry.header;
    const cleanName = requireCleanName(h.name, this.layer);
    if (GENERATED_NAMES.has(cleanName)) return null;
    if (this.seen.has(cleanName)) {
      throw new LazypullError('LAZYPULL_ERR_DUPLICATE_ENTRY', `${this.layer}: duplicate entry "${h.name}"`, { layer: this.layer, entry: h.name });
    }
    this.seen.add(cleanName);
    if (h.type !== 'hardlink') return { cleanName };
    const cleanLinkName = requireCleanName(h.linkName, this.layer, `hardlink target of "${h.name}":`);
    return { cleanName, cleanLinkName };
  }
}

/** Put the layer's name in front of an error from the tar reader. */
function inLayer(layer: string, err: unknown): unknown {
  if (isLazypullError(err) && !err.message.startsWith(layer)) {
    return new LazypullError(err.code, `${layer}: ${err.message}`, { ...err.details, layer }, { cause: err });
  }
  return err;
}

/** Entries in input order, read as the tar streams by. */
export async function* streamEntries(tarBytes: AsyncIterable<Buffer>, layer: string): AsyncGenerator<LayerEntry> {
  const reader = new TarReader(tarBytes);
  const checker = new EntryChecker(layer);
  try {
    for (;;) {
      const entry = await reader.next();
      if (!entry) return;
      const names = checker.accept(entry);
      if (!names) continue;
      const readData = (max: number): Promise<Buffer | null> =>
        reader.readData(max).catch((err: unknown) => {
          throw inLayer(layer, err);
        });
      yield { header: entry.header, raw: entry.raw, ...names, readData };
    }
  } catch (err) {
    throw inLayer(layer, err);
  } finally {
    await reader.close();
  }
}

interface IndexedEntry extends TarEntry {
  cleanName: string;
  cleanLinkName?: string;
}

export interface PrioritizedPlan {
  /** Entries in output order. */
  entries: AsyncIterable<LayerEntry>;
  /** How many of them (from the start) form the prioritized set; 0 when no listed file exists. */
  prioritizedCount: number;
  /** Remove the spill file. */
  cleanup(): Promise<void>;
}

/**
 * Index the whole layer (spilling a gzip input to a plain tar in `workDir`
 * so entries can be read in any order), then order it: listed files first.
 */
export async function prioritizedEntries(layerPath: string, layer: string, priority: string[], workDir: string): Promise<PrioritizedPlan> {
  let tarPath = layerPath;
  let spill: string | undefined;
  if ((await detectCompression(layerPath)) === 'gzip') {
    spill = join(workDir, `spill-${process.pid}-${Date.now()}.tar`);
    tarPath = spill;
    try {
      await pipeline(createReadStream(layerPath), createGunzip(), createWriteStream(spill));
    } catch (err) {
      await fs.rm(spill, { force: true });
      throw gzipError(layerPath, err);
    }
  }
  const cleanup = async (): Promise<void> => {
    if (spill) await fs.rm(spill, { force: true });
  };
  try {
    const indexed = await indexTar(tarPath, layer);
    const order = orderByPriority(indexed, priority);
    return {
      entries: readIndexed(tarPath, layer, order.entries),
      prioritizedCount: order.prioritizedCount,
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function indexTar(tarPath: string, layer: string): Promise<IndexedEntry[]> {
  const reader = new TarReader(createReadStream(tarPath, { highWaterMark: 1 << 20 }));
  const checker = new EntryChecker(layer);
  const out: IndexedEntry[] = [];
  try {
    for (;;) {
      const entry = await reader.next();
      if (!entry) return out;
      const names = checker.accept(entry);
      if (names) out.push({ ...entry, ...names });
    }
  } catch (err) {
    throw inLayer(layer, err);
  } finally {
    await reader.close();
  }
}

function orderByPriority(entries: IndexedEntry[], priority: string[]): { entries: IndexedEntry[]; prioritizedCount: number } {
  const byName = new Map(entries.map((e) => [e.cleanName, e]));
  const placed = new Set<string>();
  const order: IndexedEntry[] = [];
  const place = (name: string): void => {
    const entry = byName.get(name);
    if (!entry || placed.has(name)) return;
    placed.add(name);
    // A file can only be extracted after its directories and, for a hardlink, its target.
    for (const parent of parentNames(name)) place(parent);
    if (entry.cleanLinkName !== undefined) place(entry.cleanLinkName);
    order.push(entry);
  };
  for (const listed of priority) {
    const cleaned = cleanEntryName(listed.trim().replace(/^\/+/, ''));
    if (cleaned) place(cleaned);
  }
  const prioritizedCount = order.length;
  for (const entry of entries) if (!placed.has(entry.cleanName)) order.push(entry);
  return { entries: order, prioritizedCount };
}

async function* readIndexed(tarPath: string, layer: string, entries: IndexedEntry[]): AsyncGenerator<LayerEntry> {
  const handle = await fs.open(tarPath, 'r');
  try {
    for (const entry of entries) {
      let position = entry.dataOffset;
      let left = entry.header.size;
      yield {
        header: entry.header,
        raw: entry.raw,
        cleanName: entry.cleanName,
        cleanLinkName: entry.cleanLinkName,
        readData: async (max) => {
          if (left === 0) return null;
          const buf = Buffer.allocUnsafe(Math.min(max, left, 4 << 20));
          const { bytesRead } = await handle.read(buf, 0, buf.length, position);
          if (bytesRead === 0) {
            throw new LazypullError('LAZYPULL_ERR_TAR_INVALID', `${layer}: truncated tar: entry "${entry.header.name}" data cut short`, { layer, entry: entry.header.name });
          }
          position += bytesRead;
          left -= bytesRead;
          return buf.subarray(0, bytesRead);
        },
      };
    }
  } finally {
    await handle.close();
  }
}
