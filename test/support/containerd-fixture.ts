/**
 * A private containerd for one test file: src/sandbox's instance with its
 * own root, state, sockets, runc root and namespace in a temp dir. `stop()`
 * undoes everything (tasks, shims, mounts, runc state, cgroups, temp dir)
 * and is safe to call twice or after a failed start.
 */
export { startContainerd } from '../../src/sandbox/local-containerd';
export type { Containerd, ContainerdOptions, CriOptions, CtrOptions, CtrResult } from '../../src/sandbox/local-containerd';
