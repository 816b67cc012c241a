/**
 * The eStargz table of contents (`stargz.index.json`): its types, how the
 * converter serialises it, and how readers parse and sanity-check it.
 * Bytes in, structures out: nothing here does I/O.
 */
import { createHash } from 'node:crypto';
import { LazypullError } from '../errors';
import { cleanEntryName } from './entry-name';

export const TOC_TAR_NAME = 'stargz.index.json';
export const PREFETCH_LANDMARK = '.prefetch.landmark';
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
/** Content of both landmark files. */
export const LANDMARK_CONTENT = Buffer.from([0x0f]);

export const TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
export const UNCOMPRESSED_SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size';

export type TocEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk';

/** Field names and order follow the reference implementation's JSON. */
export interface TocEntry {
  name: string;
  type: TocEntryType;
  size?: number;
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  offset?: number;
  devMajor?: number;
  devMinor?: number;
  xattrs?: Record<string, string>;
  digest?: string;
  chunkOffset?: number;
  chunkSize?: number;
  chunkDigest?: string;
  innerOffset?: number;
}

export interface Toc {
  version: number;
  entries: TocEntry[];
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** RFC 3339 in UTC with whole seconds, omitted for the zero time, as the reference writes it. */
export function formatModtime(seconds: number): string | undefined {
  if (!seconds) return undefined;
  return new Date(Math.round(seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Serialise with tab indentation like the reference converter (any valid
 * JSON works for readers). Writers leave zero-valued fields unset, as the
 * reference's `omitempty` does.
 */
export function serializeToc(toc: Toc): Buffer {
  const entries = toc.entries.map((entry) => {
    const ordered: Record<string, unknown> = {};
    for (const key of FIELD_ORDER) if (entry[key] !== undefined) ordered[key] = entry[key];
    return ordered;
  });
  return Buffer.from(JSON.stringify({ version: toc.version, entries }, null, '\t'));
}

/** The reference writer's field order, so TOCs read alike side by side. */
const FIELD_ORDER: Array<keyof TocEntry> = [
  'name', 'type', 'size', 'modtime', 'linkName', 'mode', 'uid', 'gid', 'userName', 'groupName', 'offset',
  'devMajor', 'devMinor', 'xattrs', 'digest', 'chunkOffset', 'chunkSize', 'chunkDigest', 'innerOffset',
];

/** Sane limits so that a hostile TOC cannot exhaust memory. */
export interface TocLimits {
  maxBytes: number;
  maxEntries: number;
}

export const DEFAULT_TOC_LIMITS: TocLimits = { maxBytes: 256 << 20, maxEntries: 2_000_000 };

const ENTRY_TYPES = new Set<string>(['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk']);
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/**
 * Parse and validate TOC JSON: known types, numeric fields that are
 * non-negative integers, digests in canonical form, names inside the root.
 * Throws LAZYPULL_ERR_TOC_INVALID naming the offending entry.
 */
export function parseToc(json: Buffer, limits: TocLimits = DEFAULT_TOC_LIMITS): Toc {
  if (json.length > limits.maxBytes) {
    throw tocError(`TOC is ${json.length} bytes, over the limit of ${limits.maxBytes}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json.toString('utf8'));
  } catch (err) {
    throw tocError(`TOC is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as Toc).entries)) {
    throw tocError('TOC has no "entries" array');
  }
  const toc = parsed as Toc;
  if (toc.entries.length > limits.maxEntries) {
    throw tocError(`TOC has ${toc.entries.length} entries, over the limit of ${limits.maxEntries}`);
  }
  for (let index = 0; index < toc.entries.length; index++) validateEntry(toc.entries[index]!, index);
  return toc;
}

const NUMBER_FIELDS = ['size', 'mode', 'uid', 'gid', 'offset', 'devMajor', 'devMinor', 'chunkOffset', 'chunkSize', 'innerOffset'] as const;
const DIGEST_FIELDS = ['digest', 'chunkDigest'] as const;

function validateEntry(entry: TocEntry, index: number): void {
  // The entry's description is built only for an error: a TOC has thousands of valid entries.
  const fail = (problem: string): never => {
    throw tocError(`TOC entry ${index}${typeof entry?.name === 'string' ? ` "${entry.name}"` : ''}${problem}`);
  };
  if (typeof entry !== 'object' || entry === null) fail(' is not an object');
  if (typeof entry.name !== 'string') fail(' has no name');
  if (cleanEntryName(entry.name) === null) fail(': path escapes the layer root');
  if (!ENTRY_TYPES.has(entry.type)) fail(` has unknown type "${String(entry.type)}"`);
  for (const field of NUMBER_FIELDS) {
    const v = entry[field];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 0)) fail(` has invalid ${field}`);
  }
  for (const field of DIGEST_FIELDS) {
    const v = entry[field];
    if (v !== undefined && !(typeof v === 'string' && DIGEST_RE.test(v))) fail(` has invalid ${field}`);
  }
  if (entry.type === 'hardlink' && (typeof entry.linkName !== 'string' || cleanEntryName(entry.linkName) === null)) {
    fail(': hardlink target escapes the layer root');
  }
}

function tocError(message: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_TOC_INVALID', message);
}
