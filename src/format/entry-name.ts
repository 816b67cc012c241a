/**
 * Entry names as the TOC stores them, and the checks that keep a layer's
 * paths inside its root.
 */
import { posix } from 'node:path';
import { LazypullError } from '../errors';

/** A leading "/", an empty, "." or ".." segment, or a run of trailing slashes. */
const NEEDS_NORMALIZING = /^\/|\/\/|(^|\/)\.\.?(\/|$)/;

/**
 * Clean a tar path the way eStargz tools do: no leading "./" or "/", no
 * trailing slash, "." and ".." resolved. The root itself becomes "".
 * Returns null when the path is absolute or climbs out of the root, which a
 * layer must never do.
 */
export function cleanEntryName(name: string): string | null {
  // Most names are already clean ("usr/bin/", "etc/passwd"): skip normalize for them (a TOC has thousands).
  if (name !== '' && !NEEDS_NORMALIZING.test(name)) return name.endsWith('/') ? name.slice(0, -1) : name;
  if (name.startsWith('/')) {
    // "/" alone is the root; any other absolute path is refused.
    if (posix.normalize(name) === '/') return '';
    return null;
  }
  const normalized = posix.normalize(name);
  if (normalized === '..' || normalized.startsWith('../')) return null;
  const trimmed = normalized.replace(/\/+$/, '');
  return trimmed === '.' ? '' : trimmed;
}

/** Like cleanEntryName, but throws a path-escape error naming the layer and entry. */
export function requireCleanName(name: string, layer: string, what = 'entry'): string {
  const cleaned = cleanEntryName(name);
  if (cleaned === null) {
    throw new LazypullError(
      'LAZYPULL_ERR_PATH_ESCAPE',
      `${layer}: ${what} "${name}" is absolute or escapes the layer root`,
      { layer, entry: name },
    );
  }
  return cleaned;
}

/**
 * The name a TOC entry gets: cleaned, directories with a trailing slash as
 * the reference converter writes them, and the root as "./" (readers clean
 * it to the root; an empty name would trip some of them).
 */
export function tocEntryName(cleaned: string, isDir: boolean): string {
  if (cleaned === '') return './';
  return isDir ? `${cleaned}/` : cleaned;
}

/** Parent directories of a cleaned name, outermost first ("a/b/c" -> ["a", "a/b"]). */
export function parentNames(cleaned: string): string[] {
  const parts = cleaned.split('/');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join('/'));
  return out;
}
