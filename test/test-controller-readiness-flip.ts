/**
 * A readiness flip reconciles from the last listing (Controller.readinessChanged
 * with PodRuntime.readinessNow): the pod's gate opens on the probe's verdict
 * without another listing, and the update goes on to the next pod; a runtime
 * without readinessNow is listed as before. An in-memory node stands in for
 * containerd, so that listings can be counted (the CRI adapter's readinessNow
 * runs in test-controller's rollouts).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controller, type CloneSetStatusView } from '../src/controller/controller';
import { LABEL_POD_NAME } from '../src/controller/pod-labels';
import { StateStore } from '../src/controller/state-store';
import type { PodRuntime, PodState, PodTemplate } from '../src/controller/types';
import { cloneSetYaml } from './support/controller-fixture';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Pods in memory whose new containers start unready (a replacement takes 0.3 s); the test passes their probes (`pass`). Listings are counted. */
function probedNode(withReadinessNow: boolean) {
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
      const pod: PodState = { name, revision, sandboxId: `s${++ids}`, ip: `10.0.0.${ids}`, labels: { ...labels, [LABEL_POD_NAME]: name }, containers: containers(template, true), containersReady: true, inPlaceUpdateReady: true, terminating: false, createdAt: Date.now() };
      pods.set(pod.sandboxId, pod);
      return pod;
    },
    updateContainersInPlace: async (pod, template, changed, revision) => {
      // Slow enough that the next pod's step (started when a gate opens) ends well after the gate is seen open.
      await sleep(300);
      const live = pods.get(pod.sandboxId)!;
      const fresh = containers(template, false);
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
      return [...pods.values()].filter((p) => Object.entries(selector).every(([k, v]) => p.labels[k] === v)).map((p) => withVerdicts(structuredClone(p)));
    },
    ...(withReadinessNow ? { readinessNow: (listed: PodState[]) => listed.map(withVerdicts) } : {}),
  };
  return {
    runtime,
    listings: () => listings,
    /** Every running container not yet passing: its id. */
    unready: () => [...pods.values()].flatMap((p) => p.containers.filter((c) => !passed.has(c.containerId)).map((c) => c.containerId)),
    pass: (containerId: string) => passed.add(containerId),
  };
}

async function waitUntil<T>(what: string, check: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(2)) {
    const v = check();
    if (v !== undefined) return v;
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('controller: a readiness flip reconciles from the last listing', function () {
  this.timeout(60_000);
  let dir: string;
  let store: StateStore | undefined;
  let controller: Controller | undefined;
  beforeEach(function () {
    dir = mkdtempSync(join(tmpdir(), 'lzp-flip-'));
  });
  afterEach(async function () {
    await controller?.stop();
    await store?.close();
    controller = undefined;
    store = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function rollout(withReadinessNow: boolean): Promise<{ listingsPerFlip: number[]; status: CloneSetStatusView }> {
    const node = probedNode(withReadinessNow);
    store = StateStore.open(join(dir, 'store'));
    // No resync during the test: every listing comes from an event.
    controller = new Controller({ runtime: node.runtime, store, resyncMs: 60_000 });
    await controller.start();
    const yaml = (image: string): string => cloneSetYaml({ name: 'flip', replicas: 2, image, sidecarImage: 'sidecar:v1', maxUnavailable: 1 });
    const ready = (image: string) => (): CloneSetStatusView | undefined => {
      const s = controller!.get('flip')?.status;
      return s !== undefined && s.readyReplicas === 2 && s.updatedReadyReplicas === 2 && s.pods.every((p) => p.containers.find((c) => c.name === 'app')?.imageRef === `ref-${image}`) ? s : undefined;
    };
    controller.apply(yaml('app:v1'));
    await waitUntil('v1 ready', ready('app:v1'));
    controller.apply(yaml('app:v2'));
    const listingsPerFlip: number[] = [];
    // maxUnavailable 1: one pod at a time. Each new container waits for its probe; the test passes it.
    for (let pod = 0; pod < 2; pod++) {
      const id = await waitUntil(`new container ${pod + 1}`, () => node.unready()[0]);
      await sleep(50); // the step's own reconcile is over
      const before = node.listings();
      node.pass(id);
      controller.readinessChanged();
      await waitUntil(`pod ${pod + 1} back in the ready set`, () => (controller!.get('flip')?.status.updatedReadyReplicas === pod + 1 ? true : undefined), 250);
      listingsPerFlip.push(node.listings() - before);
    }
    return { listingsPerFlip, status: await waitUntil('v2 ready', ready('app:v2')) };
  }

  it('opens the gate and moves on without a listing', async function () {
    const { listingsPerFlip, status } = await rollout(true);
    assert.deepEqual(listingsPerFlip, [0, 0], 'the gate opened on the last listing and the probe verdict');
    assert.equal(status.pods.length, 2);
  });

  it('a runtime without readinessNow is listed on each flip, with the same outcome', async function () {
    const { listingsPerFlip, status } = await rollout(false);
    assert.ok(listingsPerFlip.every((n) => n >= 1), `listings per flip: ${listingsPerFlip.join()}`);
    assert.equal(status.pods.length, 2);
  });
});
