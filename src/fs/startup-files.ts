/**
 * Which files of a layer a container start reads, known before it starts:
 * the prioritized files (everything before `.prefetch.landmark`, put there
 * by `lazypull convert --prioritize`), and the few files containerd itself
 * reads in the image to create any container: /etc/passwd and /etc/group
 * (`WithUser…`/`WithAdditionalGIDs`, in `ctr run` and in CRI alike). These
 * are what a mount prefetches and then loads into the kernel's caches.
 */
import { S_IFMT, S_IFREG, type Inode, type LayerIndex } from './layer-index';

/** Read by containerd in the container's root filesystem before the container runs. */
export const RUNTIME_READ_FILES = ['/etc/passwd', '/etc/group'];

/** The runtime's files that this layer has as regular files. */
export function runtimeFiles(index: LayerIndex): Array<{ path: string; node: Inode }> {
  const out: Array<{ path: string; node: Inode }> = [];
  for (const path of RUNTIME_READ_FILES) {
    const node = index.lookup(path);
    if (node && (node.mode & S_IFMT) === S_IFREG) out.push({ path, node });
  }
  return out;
}

/** The runtime's files (read first: containerd reads them while it creates the container), then the prioritized paths. */
export function startupPaths(index: LayerIndex): string[] {
  return [...new Set([...runtimeFiles(index).map((f) => f.path), ...index.prioritized])];
}
