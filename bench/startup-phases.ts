/**
 * Where a lazy cold start spends its time: the LAZYPULL_TRACE lines the
 * pull CLI, the snapshotter daemon and its layer servers wrote during one
 * run, turned into "seconds since the pull began" per phase.
 */
import { readFile } from 'node:fs/promises';

/** Trace events in the order a cold start passes them, with what they mean. */
export const STARTUP_PHASES: Array<{ event: string; label: string }> = [
  { event: 'pull.start', label: '`lazypull pull` running (Node.js start-up and module loading done)' },
  { event: 'daemon.pull', label: 'the snapshotter daemon got the pull request' },
  { event: 'pull.resolved', label: 'manifest and config fetched, containerd connected' },
  { event: 'snapshotter.mount-ahead', label: 'the daemon asked its snapshotter to mount the layers ahead of containerd' },
  { event: 'snapshotter.mount-start', label: 'snapshotter began mounting the first layer (ahead of its Prepare when the daemon pulls)' },
  { event: 'snapshotter.Prepare', label: 'snapshotter got the first Prepare' },
  { event: 'server.job', label: 'standby layer server took the mount' },
  { event: 'server.tail-fetched', label: "blob's tail (footer and TOC) fetched" },
  { event: 'server.toc-parsed', label: 'TOC gunzipped, parsed and its digest checked' },
  { event: 'server.fuse-mounted', label: 'FUSE mount up (begun with the TOC fetch; requests wait for the layer)' },
  { event: 'server.toc-loaded', label: 'TOC fetched, verified and indexed; chunk cache open' },
  { event: 'server.mounted', label: 'layer served at the mount' },
  { event: 'snapshotter.Prepare.ALREADY_EXISTS', label: 'remote snapshot committed (Prepare answered)' },
  { event: 'pull.layers-done', label: 'every layer prepared' },
  { event: 'server.prefetched', label: 'prioritized files fetched and verified (layer server, from when the layer is served)' },
  { event: 'server.kernel-cache-warmed', label: "prioritized files read into the kernel's caches" },
];

/** Seconds from `startEpochMs` to the first occurrence of each phase's event in the trace file. */
export async function startupPhases(traceFile: string, startEpochMs: number): Promise<Record<string, number>> {
  const text = await readFile(traceFile, 'utf8').catch(() => '');
  const first = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [time, , event] = line.split(' ');
    if (event === undefined || first.has(event)) continue;
    first.set(event, Number(time));
  }
  const out: Record<string, number> = {};
  for (const { event } of STARTUP_PHASES) {
    const at = first.get(event);
    if (at !== undefined) out[event] = (at - startEpochMs) / 1000;
  }
  return out;
}
