/**
 * Prerequisite guards for tests that need the real runtime pieces.
 * Locally a missing prerequisite skips the test with a note; in CI it fails
 * the test, because a green CI run that silently skipped proves nothing.
 */
import { existsSync } from 'node:fs';
import { findBinary } from '../../src/sandbox/prerequisites';

/** Absolute path of an executable on PATH, or undefined (the product's lookup, shared). */
export { findBinary };

type SkippableContext = Pick<Mocha.Context, 'skip'>;

function missing(ctx: SkippableContext, what: string): void {
  const message = `prerequisite missing: ${what}`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI does not skip)`);
  console.log(`      (skipped: ${message})`);
  ctx.skip();
}

export function requireRoot(ctx: SkippableContext): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) missing(ctx, 'root privileges');
}

export function requireBinary(ctx: SkippableContext, name: string): string {
  const found = findBinary(name);
  if (found === undefined) missing(ctx, `executable "${name}" on PATH`);
  return found ?? name;
}

export function requireFuse(ctx: SkippableContext): void {
  if (!existsSync('/dev/fuse')) missing(ctx, '/dev/fuse');
  else if (findBinary('fusermount') === undefined && findBinary('fusermount3') === undefined) {
    missing(ctx, 'fusermount');
  }
}

export function requireFile(ctx: SkippableContext, path: string, what: string): string {
  if (!existsSync(path)) missing(ctx, `${what} (${path})`);
  return path;
}
