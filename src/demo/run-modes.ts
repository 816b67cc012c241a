/**
 * Ways the demo gets its image into containerd and starts it: a full pull
 * (every layer downloaded and unpacked by overlayfs, with `ctr image pull`),
 * and a lazy pull through the lazypull snapshotter (layers mounted over
 * FUSE, file bytes fetched as the container reads them). The demo runs each
 * mode in turn and compares their pull and start times.
 */
import { join } from 'node:path';
import { ContainerdConnection } from '../containerd/grpc-connection';
import { pullImage } from '../containerd/pull-image';
import { RegistryClient } from '../registry/client';
import type { Containerd } from '../sandbox/local-containerd';
import type { LocalSnapshotter } from '../sandbox/local-snapshotter';
import { measureFetched, type FetchFacts, type PulledLayerFacts } from './fetched-share';
import { timed } from './timed';

export type { FetchFacts, PulledLayerFacts };

export const LAZY_SNAPSHOTTER = 'lazypull';

export interface RunMode {
  /** Name in the JSON report. */
  name: string;
  /** For the progress line. */
  title: string;
  /** Pull and run in a namespace of its own (`<instance namespace>-<name>`), so nothing an earlier mode pulled is reused. */
  freshNamespace: boolean;
  /** Make the image available to `ctr run` in `namespace`. */
  pull(containerd: Containerd, ref: string, namespace: string): Promise<PullFacts | void>;
  /** Extra `ctr run` flags, such as `--snapshotter`. */
  runFlags: string[];
  /** Facts measured once the container has run (bytes fetched). */
  measure?(layers: PulledLayerFacts[], ranUntil: number): Promise<FetchFacts>;
}

export interface PullFacts {
  /** The image's layers in manifest order. */
  layers: PulledLayerFacts[];
}

export interface RunResult extends Partial<PullFacts>, Partial<FetchFacts> {
  mode: string;
  namespace: string;
  pullSeconds: number;
  runSeconds: number;
  /** What the container printed. */
  output: string;
}

export const FULL_PULL: RunMode = {
  name: 'full',
  title: 'full pull (overlayfs)',
  freshNamespace: false,
  async pull(containerd, ref, namespace) {
    await containerd.ctr(['image', 'pull', '--plain-http', ref], { namespace, timeoutMs: 120_000 });
  },
  runFlags: [],
};

/**
 * `lazypull pull` done in-process: image records and remote-snapshot labels
 * through containerd's API, layers prepared by the running snapshotter,
 * which mounts them lazily with background fetch off.
 */
export function lazyPullMode(snapshotter: LocalSnapshotter, workDir: string): RunMode {
  return {
    name: 'lazy',
    title: 'lazy pull through the lazypull snapshotter',
    freshNamespace: true,
    async pull(containerd, ref, namespace) {
      const conn = await ContainerdConnection.connect(containerd.address, { namespace });
      // The private registry has no auth: do not let a user's docker config.json get involved.
      const registry = new RegistryClient({ plainHttp: true, dockerConfigPath: join(workDir, 'no-docker-config.json') });
      try {
        const pulled = await pullImage(conn, registry, ref, { snapshotter: LAZY_SNAPSHOTTER });
        return { layers: pulled.layers.map((l) => ({ digest: l.digest, size: l.size, mode: l.mode })) };
      } finally {
        conn.close();
        await registry.close();
      }
    },
    runFlags: ['--snapshotter', LAZY_SNAPSHOTTER],
    measure: (layers, ranUntil) => measureFetched(snapshotter, layers, ranUntil),
  };
}

/** Pull, then run the image's own command once and capture its output; `onPulled` hears of the pull before the run starts. */
export async function pullAndRun(
  containerd: Containerd,
  ref: string,
  mode: RunMode,
  onPulled: (seconds: number, facts: PullFacts | undefined) => void = () => undefined,
): Promise<RunResult> {
  const namespace = mode.freshNamespace ? `${containerd.namespace}-${mode.name}` : containerd.namespace;
  const pulled = await timed(() => mode.pull(containerd, ref, namespace));
  onPulled(pulled.seconds, pulled.value ?? undefined);
  const id = `lazypull-demo-${mode.name}`;
  // --runc-root keeps runc's state inside the sandbox dir.
  const ran = await timed(() =>
    containerd.ctr(['run', '--rm', '--runc-root', containerd.runcRoot, ...mode.runFlags, ref, id], { namespace, timeoutMs: 60_000 }),
  );
  const ranUntil = Date.now();
  const fetched = mode.measure && pulled.value ? await mode.measure(pulled.value.layers, ranUntil) : undefined;
  return {
    mode: mode.name,
    namespace,
    pullSeconds: pulled.seconds,
    runSeconds: ran.seconds,
    output: ran.value.stdout,
    ...(pulled.value ? pulled.value : {}),
    ...(fetched ?? {}),
  };
}
