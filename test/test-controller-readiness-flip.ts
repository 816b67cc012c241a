/**
 * When the controller lists, and what it may count on between listings.
 *
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
import { StateStore } from '../src/controller/state-store';
import { cloneSetYaml } from './support/controller-fixture';
import { memoryNode } from './support/memory-node';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    // New containers wait for the test to pass their probes; a replacement takes 0.3 s, so the next pod's step
    // (started when a gate opens) ends well after the gate is seen open.
    const node = memoryNode({ stepMs: 300, replacedReady: false, readinessNow: withReadinessNow });
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

  it('a pod whose step ended after the last listing began is not counted ready until a listing shows it (a recreated pod is not its old sandbox)', async function () {
    // Listings take 0.1 s: the last one before a recreate ends shows the old sandbox, ready.
    const node = memoryNode({ stepMs: 20, replacedReady: true, readinessNow: true, listMs: 100 });
    store = StateStore.open(join(dir, 'store'));
    controller = new Controller({ runtime: node.runtime, store, resyncMs: 60_000 });
    await controller.start();
    const yaml = (command?: string[]): string => cloneSetYaml({ name: 'stale', replicas: 2, image: 'app:v1', sidecarImage: 'sidecar:v1', maxUnavailable: 2, command });
    const view = (): CloneSetStatusView | undefined => controller!.get('stale')?.status;
    controller.apply(yaml());
    const before = await waitUntil('v1 ready', () => (view()?.readyReplicas === 2 && view()!.pods.length === 2 ? view() : undefined));
    const oldSandboxes = new Set(before.pods.map((p) => p.sandboxId));
    const wrong: string[] = [];
    const stopWatching = controller.onChange(() => {
      const s = view();
      for (const p of s?.pods ?? []) if (p.ready && p.revision === s!.updateRevision && oldSandboxes.has(p.sandboxId)) wrong.push(`${p.name} on ${p.sandboxId}`);
    });
    try {
      // A command change: each pod is recreated.
      const to = controller.apply(yaml(['/bin/sh', '-c', 'echo changed'])).updateRevision;
      const after = await waitUntil('recreated and ready', () => {
        const s = view();
        return s !== undefined && s.readyReplicas === 2 && s.updatedReadyReplicas === 2 && s.pods.length === 2 && s.pods.every((p) => p.revision === to) ? s : undefined;
      });
      for (const p of after.pods) assert.equal(oldSandboxes.has(p.sandboxId), false, `${p.name} is ready on its old sandbox`);
      assert.deepEqual(wrong, [], 'a view counted an old sandbox as the recreated pod, ready');
    } finally {
      stopWatching();
    }
  });
});
