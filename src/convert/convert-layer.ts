/**
 * Convert one layer file (tar or tar.gz) into an eStargz blob, written
 * atomically: on any failure the output path is left untouched.
 */
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { LazypullError } from '../errors';
import { LANDMARK_CONTENT, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK } from '../format/toc';
import { AtomicFile } from '../util/atomic-file';
import { prioritizedEntries, streamEntries } from './entry-source';
import { DEFAULT_CHUNK_SIZE, EstargzWriter, type LayerResult } from './estargz-writer';
import { GzipPool } from './gzip-pool';
import { openLayerTar } from './layer-input';

export const DEFAULT_LEVEL = 9;

export interface ConvertLayerOptions {
  chunkSize?: number;
  /** gzip level 0-9; 9 (best compression) like the reference converter. */
  level?: number;
  /** Paths in access order; they go first, followed by the prefetch landmark. */
  prioritize?: string[];
  /** Share one worker pool across layers; its level wins. */
  pool?: GzipPool;
  /** Progress in bytes of the input file as stored. */
  onProgress?: (doneBytes: number) => void;
  /** Name used in error messages (default: the input path). */
  label?: string;
}

export function validateLevel(level: number): number {
  if (!Number.isInteger(level) || level < 0 || level > 9) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `compression level must be an integer from 0 to 9, got ${level}`);
  }
  return level;
}

export function validateChunkSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 1) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `chunk size must be a positive integer, got ${size}`);
  }
  return size;
}

export async function convertLayerFile(input: string, output: string, opts: ConvertLayerOptions = {}): Promise<LayerResult> {
  const chunkSize = validateChunkSize(opts.chunkSize ?? DEFAULT_CHUNK_SIZE);
  const level = validateLevel(opts.level ?? DEFAULT_LEVEL);
  const label = opts.label ?? input;
  await fs.access(input).catch((err) => {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${label}: cannot read input (${(err as NodeJS.ErrnoException).code})`, { layer: label });
  });
  const pool = opts.pool ?? new GzipPool(level);
  const out = await AtomicFile.create(output);
  let done = 0;
  const progress = opts.onProgress
    ? (n: number): void => {
        done += n;
        opts.onProgress?.(done);
      }
    : undefined;
  let cleanupSpill: (() => Promise<void>) | undefined;
  try {
    const writer = new EstargzWriter(out, pool, chunkSize);
    if (opts.prioritize && opts.prioritize.length > 0) {
      const plan = await prioritizedEntries(input, label, opts.prioritize, dirname(output));
      cleanupSpill = plan.cleanup;
      progress?.((await fs.stat(input)).size);
      if (plan.prioritizedCount === 0) await writer.addSyntheticFile(NO_PREFETCH_LANDMARK, LANDMARK_CONTENT);
      let index = 0;
      for await (const entry of plan.entries) {
        await writer.addEntry(entry);
        if (++index === plan.prioritizedCount) await writer.addSyntheticFile(PREFETCH_LANDMARK, LANDMARK_CONTENT);
      }
    } else {
      await writer.addSyntheticFile(NO_PREFETCH_LANDMARK, LANDMARK_CONTENT);
      for await (const entry of streamEntries(openLayerTar(input, progress), label)) await writer.addEntry(entry);
    }
    const result = await writer.finish();
    await out.commit(output);
    return result;
  } catch (err) {
    await out.abort();
    throw err;
  } finally {
    await cleanupSpill?.();
    if (!opts.pool) await pool.close();
  }
}
