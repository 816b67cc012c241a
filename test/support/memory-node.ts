/**
 * A node in memory for controller tests that are about the controller alone
 * (its watch streams, when it lists): pods labelled as the CRI adapter
 * labels sandboxes, an image's reference is `ref-<image>`, and listings are
 * counted. The CRI adapter itself is tested against containerd
 * (test-controller.ts).
 */
import { LABEL_POD_NAME } from '../../src/controller/pod-labels';
import type { PodRuntime, PodState, PodTemplate } from '../../src/controller/types';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface MemoryNodeOptions {
  /** How long creating a pod or replacing containers takes. */
  stepMs: number;
  /** Whether a replaced container is ready at once; if not, it waits for pass(). New pods are ready at once. */
  replacedReady: boolean;
  /** Offer PodRuntime.readinessNow. */
  readinessNow: boolean;
  /** How long a listing takes (its answer is what was there when it began); default 0. */
  listMs?: number;
}

export interface MemoryNode {
  runtime: PodRuntime;
  /** How many times listPods ran. */
  listings(): number;
  /** Running containers that have not passed their probe. */
  unready(): string[];
  /** Pass a container's probe. */
  pass(containerId: string): void;
}

export function memoryNode(opts: MemoryNodeOptions): MemoryNode {
  const pods = new Map<string, PodState>();
  const passed = new Set<string>();
  let ids = 0;
  let listings = 0;
  const containers = (template: PodTemplate, ready: boolean): PodState['containers'] =>
    template.containers.map((c) => {
      const containerId = `c${++ids}`;
      if (ready) passed.add(containerId);
      return { name: c.name, containerId, image: c.image, imageRef: `ref-${c.image}`, running: true, startedAt: Date.now() * 1e6, ready, restartCount: 0 };
    });
  const withVerdicts = (p: PodState): PodState => {
    const cs = p.containers.map((c) => ({ ...c, ready: passed.has(c.containerId) }));
    return { ...p, containers: cs, containersReady: cs.every((c) => c.ready) };
  };
  const runtime: PodRuntime = {
    pullImage: async (image) => `ref-${image}`,
    createPod: async (name, template, revision, labels) => {
      await sleep(opts.stepMs);
      const pod: PodState = { name, revision, sandboxId: `s${++ids}`, ip: `10.0.0.${ids}`, labels: { ...labels, [LABEL_POD_NAME]: name }, containers: containers(template, true), containersReady: true, inPlaceUpdateReady: true, terminating: false, createdAt: Date.now() };
      pods.set(pod.sandboxId, pod);
      return pod;
    },
    updateContainersInPlace: async (pod, template, changed, revision) => {
      await sleep(opts.stepMs);
      const live = pods.get(pod.sandboxId)!;
      const fresh = containers(template, opts.replacedReady);
      live.containers = live.containers.map((c) => (changed.includes(c.name) ? fresh.find((f) => f.name === c.name)! : c));
      live.revision = revision;
    },
    setInPlaceUpdateReady: async () => undefined,
    recordInPlaceUpdateState: async () => undefined,
    deletePod: async (pod) => {
      pods.delete(pod.sandboxId);
    },
    listPods: async (selector) => {
      listings++;
      const listed = [...pods.values()].filter((p) => Object.entries(selector).every(([k, v]) => p.labels[k] === v)).map((p) => withVerdicts(structuredClone(p)));
      if (opts.listMs) await sleep(opts.listMs);
      return listed;
    },
    ...(opts.readinessNow ? { readinessNow: (listed: PodState[]) => listed.map(withVerdicts) } : {}),
  };
  return {
    runtime,
    listings: () => listings,
    unready: () => [...pods.values()].flatMap((p) => p.containers.filter((c) => !passed.has(c.containerId)).map((c) => c.containerId)),
    pass: (containerId) => void passed.add(containerId),
  };
}
