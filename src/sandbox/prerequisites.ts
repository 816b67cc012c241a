/**
 * Checks for what the sandbox daemons need on the machine, failing with the
 * Debian package to install, so a user knows the fix from the message alone.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { LazypullError } from '../errors';

/** Absolute path of an executable on PATH (plus the sbin dirs root has), or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin']);
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The executable's path, or a PREREQUISITE_MISSING error naming the package that ships it. */
export function requireBinary(name: string, debianPackage: string): string {
  const found = findBinary(name);
  if (found === undefined) {
    throw new LazypullError(
      'LAZYPULL_ERR_PREREQUISITE_MISSING',
      `${name} is not installed: install the Debian package ${debianPackage} (apt-get install ${debianPackage})`,
      { binary: name, package: debianPackage },
    );
  }
  return found;
}

/** containerd, runc, mounts and cgroups all need root. */
export function requireRoot(what: string): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new LazypullError('LAZYPULL_ERR_PREREQUISITE_MISSING', `${what} needs root (it starts containerd and runs containers)`);
  }
}
