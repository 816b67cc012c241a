/**
 * Chain IDs (OCI image spec): the identity of a stack of layers, and the
 * name containerd gives the committed snapshot of that stack.
 * chain(0) = diffID(0); chain(i) = sha256(chain(i-1) + " " + diffID(i)).
 */
import { createHash } from 'node:crypto';

export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const previous = out[out.length - 1];
    out.push(previous === undefined ? diffId : `sha256:${createHash('sha256').update(`${previous} ${diffId}`).digest('hex')}`);
  }
  return out;
}
