/**
 * The rollout planner, round by round: a simulated node applies each plan
 * (creates, deletes, in-place updates, recreations), pods become ready, and
 * the next plan follows, as the controller loop does.
 */
import { strict as assert } from 'node:assert';
import { planRollout, resolveRolloutLimits, type Plan, type PlanInput } from '../src/controller/rollout-planner';
import { revisionHash } from '../src/controller/revision';
import { podReady } from '../src/controller/types';
import type { CloneSetSpec, PodState, PodTemplate, RolloutAction, UpdateStrategy } from '../src/controller/types';

function tpl(version: string, command = ['/server']): PodTemplate {
  return {
    labels: { app: 'web' },
    annotations: {},
    containers: [
      { name: 'app', image: `reg/app:${version}`, command },
      { name: 'sidecar', image: 'reg/sidecar:v1' },
    ],
  };
}

const V1 = tpl('v1');
const V2 = tpl('v2');
const V2_COMMAND = tpl('v2', ['/server', '--new']);
const V3 = tpl('v3');
const R1 = revisionHash(V1);
const R2 = revisionHash(V2);
const R2_COMMAND = revisionHash(V2_COMMAND);
const R3 = revisionHash(V3);
const TEMPLATES = new Map([[R1, V1], [R2, V2], [R2_COMMAND, V2_COMMAND], [R3, V3]]);

function spec(replicas: number, template: PodTemplate, strategy: Partial<UpdateStrategy> = {}): CloneSetSpec {
  return {
    name: 'web',
    replicas,
    selector: { matchLabels: { app: 'web' } },
    template,
    updateStrategy: {
      type: 'InPlaceIfPossible',
      partition: 0,
      maxUnavailable: '20%',
      maxSurge: 0,
      paused: false,
      inPlaceUpdateStrategy: { gracePeriodSeconds: 0 },
      ...strategy,
    },
  };
}

let clock = 0;
function pod(name: string, revision: string, opts: Partial<PodState> = {}): PodState {
  clock += 1;
  return {
    name,
    revision,
    sandboxId: `sb-${name}-${clock}`,
    ip: '10.0.0.1',
    labels: { app: 'web' },
    containers: [],
    containersReady: true,
    inPlaceUpdateReady: true,
    terminating: false,
    createdAt: clock,
    ...opts,
  };
}

function pods(count: number, revision: string, labels: Array<Record<string, string>> = []): PodState[] {
  return Array.from({ length: count }, (_, i) => pod(`web-${i}`, revision, { labels: { app: 'web', ...(labels[i] ?? {}) } }));
}

interface Options {
  busy?: string[];
  blocked?: Record<string, string>;
  templates?: Map<string, PodTemplate>;
  currentRevision?: string;
}

function plan(s: CloneSetSpec, list: PodState[], opts: Options = {}): Plan {
  const templates = opts.templates ?? TEMPLATES;
  const input: PlanInput = {
    spec: s,
    updateRevision: revisionHash(s.template),
    templateOf: (r) => templates.get(r),
    pods: list,
    busy: new Set(opts.busy ?? []),
    blocked: new Map(Object.entries(opts.blocked ?? {})),
    nameFor: (i) => `web-${i}`,
    currentRevision: opts.currentRevision,
  };
  return planRollout(input);
}

/** Short form of actions for assertions: "create web-5@<rev>", "inplace web-0", "recreate web-0", "delete web-0". */
function show(actions: RolloutAction[]): string[] {
  return actions.map((a) => {
    switch (a.kind) {
      case 'create': return `create ${a.name}@${a.revision === R1 ? 'R1' : a.revision === R2 ? 'R2' : a.revision}`;
      case 'delete': return `delete ${a.pod}`;
      case 'updateInPlace': return `inplace ${a.pod}`;
      case 'recreate': return `recreate ${a.pod}`;
    }
  });
}

/** A node that carries out plans: every action takes effect at once, pods turn ready when `settle` runs. */
class Node {
  pods: PodState[];
  /** Update actions in the order they were issued. */
  updated: string[] = [];
  rounds: Plan[] = [];
  /** Lowest number of ready pods seen right after applying a plan (before anything became ready). */
  minReady = Infinity;
  maxPods = 0;
  /** Pods whose new containers never become ready. */
  failing = new Set<string>();

  constructor(initial: PodState[]) {
    this.pods = initial;
  }

  apply(actions: RolloutAction[]): void {
    for (const a of actions) {
      switch (a.kind) {
        case 'create':
          this.pods.push(pod(a.name, a.revision, { containersReady: false }));
          break;
        case 'delete':
          this.pods = this.pods.filter((p) => p.name !== a.pod);
          break;
        case 'updateInPlace': {
          const p = this.find(a.pod);
          Object.assign(p, { revision: a.toRevision, inPlaceUpdateReady: false, containersReady: false });
          this.updated.push(a.pod);
          break;
        }
        case 'recreate': {
          const old = this.find(a.pod);
          const fresh = pod(a.pod, a.toRevision, { containersReady: false, labels: old.labels });
          assert.notEqual(fresh.sandboxId, old.sandboxId);
          this.pods = this.pods.map((p) => (p.name === a.pod ? fresh : p));
          this.updated.push(a.pod);
          break;
        }
      }
    }
    this.minReady = Math.min(this.minReady, this.pods.filter(podReady).length);
    this.maxPods = Math.max(this.maxPods, this.pods.length);
  }

  settle(): void {
    for (const p of this.pods) {
      if (this.failing.has(p.name)) continue;
      p.containersReady = true;
      p.inPlaceUpdateReady = true;
    }
  }

  /** One round: plan, apply, settle. */
  step(s: CloneSetSpec, opts: Options = {}): Plan {
    const p = plan(s, this.pods, opts);
    this.rounds.push(p);
    this.apply(p.actions);
    this.settle();
    return p;
  }

  /** Plan, apply and settle until a plan has no action; returns the last plan. */
  run(s: CloneSetSpec, opts: Options = {}, maxRounds = 50): Plan {
    for (let round = 0; round < maxRounds; round++) {
      const p = plan(s, this.pods, opts);
      this.rounds.push(p);
      if (p.actions.length === 0) return p;
      this.apply(p.actions);
      this.settle();
    }
    assert.fail(`no steady state after ${maxRounds} rounds`);
  }

  revisions(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.pods) {
      const key = p.revision === R1 ? 'R1' : p.revision === R2 ? 'R2' : p.revision;
      out[key] = (out[key] ?? 0) + 1;
    }
    return out;
  }

  private find(name: string): PodState {
    const p = this.pods.find((x) => x.name === name);
    assert.ok(p, `pod ${name} exists`);
    return p;
  }
}

describe('rollout planner', function () {
  describe('limits', function () {
    const table: Array<[Partial<UpdateStrategy>, number, { partition: number; maxSurge: number; maxUnavailable: number }]> = [
      [{}, 5, { partition: 0, maxSurge: 0, maxUnavailable: 1 }],
      [{}, 3, { partition: 0, maxSurge: 0, maxUnavailable: 1 }], // 20% of 3 rounds up without surge
      [{ maxSurge: 1 }, 3, { partition: 0, maxSurge: 1, maxUnavailable: 0 }], // and down with surge
      [{ maxSurge: '10%' }, 12, { partition: 0, maxSurge: 2, maxUnavailable: 2 }],
      [{ maxSurge: 2, paused: true }, 5, { partition: 0, maxSurge: 0, maxUnavailable: 1 }],
      [{ partition: '40%', maxUnavailable: '50%' }, 5, { partition: 2, maxSurge: 0, maxUnavailable: 3 }],
      [{ partition: 7, maxUnavailable: 4 }, 5, { partition: 5, maxSurge: 0, maxUnavailable: 4 }],
    ];
    for (const [strategy, replicas, expected] of table) {
      it(`${JSON.stringify(strategy)} with ${replicas} replicas`, function () {
        assert.deepEqual(resolveRolloutLimits(spec(replicas, V1, strategy)), expected);
      });
    }
  });

  describe('scale', function () {
    it('creates the missing pods at the update revision, with free names', function () {
      const p = plan(spec(3, V1), []);
      assert.deepEqual(show(p.actions), ['create web-0@R1', 'create web-1@R1', 'create web-2@R1']);
      const q = plan(spec(4, V1), [pod('web-0', R1), pod('web-2', R1)]);
      assert.deepEqual(show(q.actions), ['create web-1@R1', 'create web-3@R1']);
    });

    it('does not create a pod twice while its creation is in flight', function () {
      const p = plan(spec(3, V1), [pod('web-0', R1)], { busy: ['web-1'] });
      assert.deepEqual(show(p.actions), ['create web-2@R1']);
    });

    it('does not create a replacement while a pod is being recreated under the same name', function () {
      const list = [pod('web-0', R1, { terminating: true }), pod('web-1', R1), pod('web-2', R1)];
      const p = plan(spec(3, V2, { maxUnavailable: 1 }), list, { busy: ['web-0'] });
      assert.deepEqual(p.actions, []);
    });

    it('works with random pod names', function () {
      let n = 0;
      const input: PlanInput = {
        spec: spec(3, V1),
        updateRevision: R1,
        templateOf: (r) => TEMPLATES.get(r),
        pods: [pod('web-x1', R1)],
        busy: new Set(['web-x2']),
        blocked: new Map(),
        nameFor: () => `web-x${++n}`,
      };
      assert.deepEqual(show(planRollout(input).actions), ['create web-x3@R1']);
    });

    it('ignores terminating pods when counting, but not when naming', function () {
      const p = plan(spec(2, V1), [pod('web-0', R1), pod('web-1', R1, { terminating: true })]);
      assert.deepEqual(show(p.actions), ['create web-2@R1']);
      assert.equal(p.status.replicas, 1);
    });

    const downs: Array<{ name: string; pods: PodState[]; replicas: number; expected: string[] }> = [
      {
        name: 'newest first',
        pods: [pod('web-0', R1), pod('web-1', R1), pod('web-2', R1)],
        replicas: 1,
        expected: ['delete web-2', 'delete web-1'],
      },
      {
        name: 'not ready before ready',
        pods: [pod('web-0', R1, { containersReady: false }), pod('web-1', R1), pod('web-2', R1)],
        replicas: 2,
        expected: ['delete web-0'],
      },
      {
        name: 'old revision before new, during an update',
        pods: [pod('web-0', R1), pod('web-1', R2), pod('web-2', R2), pod('web-3', R1)],
        replicas: 2,
        expected: ['delete web-3', 'delete web-0'],
      },
      {
        name: 'keeps the partition on the old revision',
        pods: [pod('web-0', R1), pod('web-1', R1), pod('web-2', R2), pod('web-3', R2)],
        replicas: 3,
        expected: ['delete web-3'],
      },
      { name: 'to zero', pods: pods(3, R2), replicas: 0, expected: ['delete web-2', 'delete web-1', 'delete web-0'] },
    ];
    for (const d of downs) {
      it(`deletes extra pods: ${d.name}`, function () {
        const s = spec(d.replicas, V2, d.name.includes('partition') ? { partition: 2 } : {});
        assert.deepEqual(show(plan(s, d.pods).actions), d.expected);
      });
    }

    it('does not scale down below the pods it cannot account for while operations are in flight', function () {
      // web-3 is busy (its deletion may be under way): only idle pods count as surely there.
      const p = plan(spec(3, V1), pods(4, R1), { busy: ['web-3'] });
      assert.deepEqual(p.actions, []);
    });

    it('scales while paused', function () {
      const p = plan(spec(4, V2, { paused: true }), pods(3, R1));
      assert.deepEqual(show(p.actions), ['create web-3@R2']);
      assert.match(p.status.message ?? '', /updates are paused/);
    });

    it('recreates missing partition pods at the current revision, as CloneSet', function () {
      // partition 2 of 5 was reached (2 old, 3 new); an old pod disappeared.
      const list = [pod('web-0', R1), pod('web-2', R2), pod('web-3', R2), pod('web-4', R2)];
      assert.deepEqual(show(plan(spec(5, V2, { partition: 2 }), list).actions), ['create web-1@R1']);
      // Without the old template the controller cannot build one: the new revision it is.
      const onlyNew = new Map([[R2, V2]]);
      assert.deepEqual(show(plan(spec(5, V2, { partition: 2 }), list, { templates: onlyNew }).actions), ['create web-1@R2']);
      // A remembered current revision is used even when no old pod is left.
      const allNew = [pod('web-2', R2), pod('web-3', R2), pod('web-4', R2)];
      assert.deepEqual(show(plan(spec(4, V2, { partition: 1 }), allNew, { currentRevision: R1 }).actions), ['create web-0@R1']);
    });
  });

  describe('partition', function () {
    const table: Array<[number | string, number, number]> = [
      [2, 5, 2],
      [0, 5, 0],
      [5, 5, 5],
      ['40%', 5, 2],
      ['50%', 5, 3],
      ['99%', 5, 4],
    ];
    for (const [partition, replicas, old] of table) {
      it(`partition ${JSON.stringify(partition)} of ${replicas} leaves exactly ${old} on the old revision`, function () {
        const node = new Node(pods(replicas, R1));
        const s = spec(replicas, V2, { partition, maxUnavailable: 1 });
        const last = node.run(s);
        assert.equal(node.pods.filter((p) => p.revision === R1).length, old);
        assert.equal(node.pods.length, replicas);
        assert.equal(last.expectedUpdatedReplicas, replicas - old);
        assert.deepEqual(
          { ...last.status },
          {
            replicas,
            readyReplicas: replicas,
            updatedReplicas: replicas - old,
            updatedReadyReplicas: replicas - old,
            updateRevision: R2,
            currentRevision: old > 0 ? R1 : R2,
          },
        );
        // Lowering the partition afterwards continues the rollout.
        node.run(spec(replicas, V2, { partition: 0, maxUnavailable: 1 }));
        assert.deepEqual(node.revisions(), { R2: replicas });
      });
    }

    it('does not update more pods than the partition allows while updates are in flight', function () {
      // 5 old, partition 2, generous maxUnavailable: 3 updates go out at once, then nothing while they run.
      const s = spec(5, V2, { partition: 2, maxUnavailable: 5 });
      const first = plan(s, pods(5, R1));
      assert.deepEqual(show(first.actions), ['inplace web-0', 'inplace web-1', 'inplace web-2']);
      // The pods still report the old revision while their updates run.
      const second = plan(s, pods(5, R1), { busy: ['web-0', 'web-1', 'web-2'] });
      assert.deepEqual(second.actions, []);
    });
  });

  describe('maxUnavailable', function () {
    const table: Array<{ replicas: number; maxUnavailable: number | string; perRound: number[] }> = [
      { replicas: 5, maxUnavailable: 1, perRound: [1, 1, 1, 1, 1] },
      { replicas: 5, maxUnavailable: '20%', perRound: [1, 1, 1, 1, 1] },
      { replicas: 5, maxUnavailable: 2, perRound: [2, 2, 1] },
      { replicas: 3, maxUnavailable: '50%', perRound: [2, 1] }, // 1.5 rounds up
      { replicas: 10, maxUnavailable: '20%', perRound: [2, 2, 2, 2, 2] },
      { replicas: 4, maxUnavailable: '100%', perRound: [4] },
    ];
    for (const t of table) {
      it(`${JSON.stringify(t.maxUnavailable)} of ${t.replicas}: ${t.perRound.join(', ')} updates per round`, function () {
        const node = new Node(pods(t.replicas, R1));
        const limit = resolveRolloutLimits(spec(t.replicas, V2, { maxUnavailable: t.maxUnavailable })).maxUnavailable;
        node.run(spec(t.replicas, V2, { maxUnavailable: t.maxUnavailable }));
        const perRound = node.rounds.map((r) => r.actions.length).filter((n) => n > 0);
        assert.deepEqual(perRound, t.perRound);
        assert.ok(t.replicas - node.minReady <= limit, `at most ${limit} unavailable, saw ${t.replicas - node.minReady}`);
        assert.deepEqual(node.revisions(), { R2: t.replicas });
        assert.deepEqual(new Set(node.updated).size, t.replicas, 'each pod updated once');
      });
    }

    it('issues one update at a time, waiting for each pod to be ready again', function () {
      const node = new Node(pods(3, R1));
      const s = spec(3, V2, { maxUnavailable: 1 });
      const first = plan(s, node.pods);
      assert.deepEqual(show(first.actions), ['inplace web-0']);
      node.apply(first.actions);
      // web-0 is still starting: nothing else may go.
      const waiting = plan(s, node.pods);
      assert.deepEqual(waiting.actions, []);
      assert.match(waiting.status.message ?? '', /waiting for pods to become ready before updating "web-1": maxUnavailable is 1 \(not ready: web-0\)/);
      node.settle();
      assert.deepEqual(show(plan(s, node.pods).actions), ['inplace web-1']);
    });

    it('counts busy pods as unavailable and never gives them a second action', function () {
      const s = spec(5, V2, { maxUnavailable: 1 });
      const p = plan(s, pods(5, R1), { busy: ['web-0'] });
      assert.deepEqual(p.actions, []);
      assert.equal(p.status.message, undefined, 'progress is under way');
      const q = plan(s, pods(5, R1), { busy: ['web-0'] });
      assert.ok(!q.actions.some((a) => 'pod' in a && a.pod === 'web-0'));
    });

    it('counts a missing pod as unavailable', function () {
      // web-4 is gone and its replacement is being created: the budget of 1 is used up.
      const list = pods(4, R1);
      assert.deepEqual(plan(spec(5, V2, { maxUnavailable: 1 }), list, { busy: ['web-4'] }).actions, []);
    });

    it('updates pods that are already unavailable at no cost, even when their turn has not come', function () {
      const list = pods(5, R1);
      list[3].containersReady = false;
      const p = plan(spec(5, V2, { maxUnavailable: 1 }), list);
      assert.deepEqual(show(p.actions), ['inplace web-3']);
      const q = plan(spec(5, V2, { maxUnavailable: 2 }), list);
      assert.deepEqual(show(q.actions), ['inplace web-0', 'inplace web-3']);
    });

    it('stops at maxUnavailable when new containers never become ready', function () {
      const node = new Node(pods(5, R1));
      node.failing = new Set(['web-0', 'web-1', 'web-2', 'web-3', 'web-4']);
      const last = node.run(spec(5, V2, { maxUnavailable: 2 }));
      assert.deepEqual(node.updated, ['web-0', 'web-1']);
      assert.deepEqual(node.revisions(), { R1: 3, R2: 2 });
      assert.equal(last.status.readyReplicas, 3);
      assert.equal(last.status.updatedReadyReplicas, 0);
      assert.match(last.status.message ?? '', /maxUnavailable is 2 \(not ready: web-0, web-1\)/);
    });
  });

  describe('maxSurge', function () {
    it('creates new pods first, updates the rest, then removes the surplus old pod', function () {
      const node = new Node(pods(5, R1));
      const s = spec(5, V2, { maxSurge: 1, maxUnavailable: 0 });
      node.run(s);
      const steps = node.rounds.filter((r) => r.actions.length > 0).map((r) => show(r.actions).join(', '));
      assert.deepEqual(steps, [
        'create web-5@R2',
        'inplace web-0',
        'inplace web-1',
        'inplace web-2',
        'inplace web-3',
        'delete web-4',
      ]);
      assert.deepEqual(node.revisions(), { R2: 5 });
      assert.equal(node.minReady, 5, 'never below replicas with maxUnavailable 0');
      assert.equal(node.maxPods, 6);
    });

    it('when the change needs new pods: a surge pod first, recreations one at a time, then the surplus old pod removed', function () {
      const node = new Node(pods(3, R1));
      node.run(spec(3, V2_COMMAND, { maxSurge: 1, maxUnavailable: 0 }));
      const steps = node.rounds.filter((r) => r.actions.length > 0).map((r) => show(r.actions).join(', '));
      assert.deepEqual(steps, [`create web-3@${R2_COMMAND}`, 'recreate web-0', 'recreate web-1', 'delete web-2']);
      assert.equal(node.pods.length, 3);
      assert.ok(node.pods.every((p) => p.revision === R2_COMMAND));
      assert.equal(node.minReady, 3, 'never below replicas with maxUnavailable 0');
      assert.equal(node.maxPods, 4);
    });

    it('with a percentage rounds up and surges several pods', function () {
      const node = new Node(pods(4, R1));
      const s = spec(4, V2, { type: 'ReCreate', maxSurge: '50%', maxUnavailable: 0 });
      node.run(s);
      assert.deepEqual(show(node.rounds[0].actions), ['create web-4@R2', 'create web-5@R2']);
      assert.equal(node.maxPods, 6);
      assert.deepEqual(node.revisions(), { R2: 4 });
      assert.equal(node.pods.length, 4);
      assert.equal(node.minReady, 4);
    });

    it('is not used while paused, and not beyond the partition', function () {
      assert.deepEqual(plan(spec(5, V2, { maxSurge: 2, paused: true }), pods(5, R1)).actions, []);
      const node = new Node(pods(5, R1));
      node.run(spec(5, V2, { maxSurge: 3, partition: 4 }));
      assert.deepEqual(node.revisions(), { R1: 4, R2: 1 });
      assert.equal(node.maxPods, 6);
      assert.equal(node.pods.length, 5);
    });
  });

  describe('order', function () {
    it('weightPriority: higher total weight first, ties by name', function () {
      const labels: Array<Record<string, string>> = [{ zone: 'b' }, { zone: 'a' }, {}, { zone: 'a', canary: 'true' }, { zone: 'c' }, { zone: 'b' }];
      const node = new Node(pods(6, R1, labels));
      node.run(spec(6, V2, {
        maxUnavailable: 1,
        priorityStrategy: {
          weightPriority: [
            { weight: 50, matchSelector: { matchLabels: { zone: 'a' } } },
            { weight: 30, matchSelector: { matchLabels: { zone: 'b' } } },
            { weight: 40, matchSelector: { matchLabels: { canary: 'true' } } },
          ],
        },
      }));
      // web-3: 90, web-1: 50, web-0 and web-5: 30, web-2 and web-4: 0
      assert.deepEqual(node.updated, ['web-3', 'web-1', 'web-0', 'web-5', 'web-2', 'web-4']);
    });

    it('orderPriority, as Kruise sorts: pods without the keys first, then by the integer at the end of the first key, larger first', function () {
      const labels: Array<Record<string, string>> = [{ order: '3' }, {}, { order: 'sts-10' }, { rank: '1' }, { order: '1' }, { rank: '0' }, { order: 'x' }];
      const node = new Node(pods(7, R1, labels));
      node.run(spec(7, V2, {
        maxUnavailable: 1,
        priorityStrategy: { orderPriority: [{ orderedKey: 'order' }, { orderedKey: 'rank' }] },
      }));
      // none; then order: 10, 3, 1, x->0; then rank: 1, 0
      assert.deepEqual(node.updated, ['web-1', 'web-2', 'web-0', 'web-4', 'web-6', 'web-3', 'web-5']);
    });

    it('scatterStrategy: 3 of 10 labelled pods go 1st, 6th and 10th', function () {
      const labels = Array.from({ length: 10 }, (_, i): Record<string, string> => ([0, 1, 2].includes(i) ? { foo: 'bar' } : {}));
      const node = new Node(pods(10, R1, labels));
      node.run(spec(10, V2, { maxUnavailable: 1, scatterStrategy: [{ key: 'foo', value: 'bar' }] }));
      const positions = node.updated.map((name, i) => ([`web-0`, `web-1`, `web-2`].includes(name) ? i + 1 : 0)).filter(Boolean);
      assert.deepEqual(positions, [1, 6, 10]);
      assert.deepEqual(node.updated, ['web-0', 'web-3', 'web-4', 'web-5', 'web-6', 'web-1', 'web-7', 'web-8', 'web-9', 'web-2']);
    });

    it('scatterStrategy spreads zones so no zone is updated together', function () {
      const zones = ['a', 'a', 'a', 'b', 'b', 'b'].map((zone) => ({ zone }));
      const node = new Node(pods(6, R1, zones));
      node.run(spec(6, V2, { maxUnavailable: 1, scatterStrategy: [{ key: 'zone', value: 'a' }] }));
      assert.deepEqual(node.updated, ['web-0', 'web-3', 'web-4', 'web-1', 'web-5', 'web-2']);
    });

    it('priority first, then scatter', function () {
      const labels: Array<Record<string, string>> = [{ zone: 'a' }, { zone: 'a' }, { zone: 'b', first: 'y' }, { zone: 'b', first: 'y' }, { zone: 'b' }, { zone: 'a', first: 'y' }];
      const node = new Node(pods(6, R1, labels));
      node.run(spec(6, V2, {
        maxUnavailable: 1,
        priorityStrategy: { weightPriority: [{ weight: 10, matchSelector: { matchLabels: { first: 'y' } } }] },
        scatterStrategy: [{ key: 'zone', value: 'a' }],
      }));
      // priority order: web-2, web-3, web-5, web-0, web-1, web-4; then zone=a (web-5, web-0, web-1) spread among the others
      assert.deepEqual(node.updated, ['web-5', 'web-2', 'web-3', 'web-0', 'web-4', 'web-1']);
    });

    it('combined with partition, updates only the first pods in that order', function () {
      const labels: Array<Record<string, string>> = [{ order: '5' }, { order: '9' }, { order: '2' }, { order: '7' }, { order: '1' }];
      const node = new Node(pods(5, R1, labels));
      node.run(spec(5, V2, { partition: 3, maxUnavailable: 1, priorityStrategy: { orderPriority: [{ orderedKey: 'order' }] } }));
      assert.deepEqual(node.updated, ['web-1', 'web-3']);
    });
  });

  describe('strategy types', function () {
    it('InPlaceIfPossible updates image-only changes in place, keeping the sandbox', function () {
      const node = new Node(pods(2, R1));
      const sandboxes = node.pods.map((p) => p.sandboxId);
      node.run(spec(2, V2, { maxUnavailable: 2 }));
      assert.deepEqual(show(node.rounds[0].actions), ['inplace web-0', 'inplace web-1']);
      assert.deepEqual(node.pods.map((p) => p.sandboxId), sandboxes);
    });

    it('InPlaceIfPossible recreates when more than images changed, or when the old template is unknown', function () {
      assert.deepEqual(show(plan(spec(2, V2_COMMAND, { maxUnavailable: 2 }), pods(2, R1)).actions), ['recreate web-0', 'recreate web-1']);
      const unknown = new Map([[R2, V2]]);
      assert.deepEqual(show(plan(spec(1, V2), pods(1, R1), { templates: unknown }).actions), ['recreate web-0']);
    });

    it('ReCreate recreates even image-only changes', function () {
      const node = new Node(pods(3, R1));
      node.run(spec(3, V2, { type: 'ReCreate', maxUnavailable: 1 }));
      assert.ok(node.rounds.flatMap((r) => r.actions).every((a) => a.kind === 'recreate'));
      assert.deepEqual(node.updated, ['web-0', 'web-1', 'web-2']);
      assert.equal(node.minReady, 2);
    });

    it('InPlaceOnly refuses a change it cannot do in place, naming the field', function () {
      const p = plan(spec(3, V2_COMMAND, { type: 'InPlaceOnly', maxUnavailable: 1 }), pods(3, R1));
      assert.deepEqual(p.actions, []);
      assert.match(p.status.message ?? '', /^updateStrategy\.type is InPlaceOnly but 3 pod\(s\) cannot be updated in place: pod "web-0": container "app": command changed \(spec\.template\.spec\.containers\[0\]\.command\)/);
      const unknown = plan(spec(1, V2, { type: 'InPlaceOnly' }), pods(1, R1), { templates: new Map() });
      assert.match(unknown.status.message ?? '', /template of its revision "[0-9a-f]+" is unknown/);
    });

    it('InPlaceOnly updates image-only changes in place', function () {
      const node = new Node(pods(3, R1));
      node.run(spec(3, V2, { type: 'InPlaceOnly', maxUnavailable: 1 }));
      assert.ok(node.rounds.flatMap((r) => r.actions).every((a) => a.kind === 'updateInPlace'));
      assert.deepEqual(node.revisions(), { R2: 3 });
    });
  });

  describe('paused and blocked', function () {
    it('paused: no updates, and the status says so', function () {
      const p = plan(spec(3, V2, { paused: true }), pods(3, R1));
      assert.deepEqual(p.actions, []);
      assert.match(p.status.message ?? '', /updates are paused \(spec\.updateStrategy\.paused\): 3 pod\(s\) remain on old revisions/);
      // Resuming continues where it stopped.
      const node = new Node(pods(3, R1));
      node.step(spec(3, V2, { maxUnavailable: 1 }));
      node.step(spec(3, V2, { maxUnavailable: 1 }));
      assert.deepEqual(node.revisions(), { R1: 1, R2: 2 });
      const paused = node.run(spec(3, V2, { paused: true }));
      assert.deepEqual(paused.actions, []);
      node.run(spec(3, V2, { maxUnavailable: 1 }));
      assert.deepEqual(node.revisions(), { R2: 3 });
    });

    it('blocked: the pod keeps its old revision, the rollout stops and says why', function () {
      const list = [pod('web-0', R1), pod('web-1', R1), pod('web-2', R2)];
      const p = plan(spec(3, V2, { maxUnavailable: 1 }), list, { blocked: { 'web-0': 'image "reg/app:v2" not found' } });
      assert.deepEqual(p.actions, []);
      assert.match(p.status.message ?? '', /^rollout stopped: pod "web-0": image "reg\/app:v2" not found/);
      assert.equal(p.status.updatedReplicas, 1);
    });

    it('blocked pods at the update revision no longer matter', function () {
      const p = plan(spec(2, V2, { maxUnavailable: 1 }), [pod('web-0', R2), pod('web-1', R1)], { blocked: { 'web-0': 'old failure' } });
      assert.deepEqual(show(p.actions), ['inplace web-1']);
    });
  });

  describe('status and revisions', function () {
    it('reports counts like kubectl get cloneset', function () {
      const list = [
        pod('web-0', R2),
        pod('web-1', R2, { inPlaceUpdateReady: false }),
        pod('web-2', R1),
        pod('web-3', R1, { containersReady: false }),
        pod('web-4', R1, { terminating: true }),
      ];
      const { status } = plan(spec(4, V2, { paused: true }), list);
      assert.deepEqual(
        { ...status, message: undefined },
        { replicas: 4, readyReplicas: 2, updatedReplicas: 2, updatedReadyReplicas: 1, updateRevision: R2, currentRevision: R1, message: undefined },
      );
    });

    it('currentRevision is the most common old revision', function () {
      const list = [pod('web-0', R1), pod('web-1', R2), pod('web-2', R2), pod('web-3', R3)];
      assert.equal(plan(spec(4, V3, { paused: true }), list).status.currentRevision, R2);
      assert.equal(plan(spec(2, V3, { paused: true }), [pod('web-0', R1), pod('web-1', R2)], { currentRevision: R2 }).status.currentRevision, R2);
    });

    it('applying the previous spec rolls back in place', function () {
      const node = new Node(pods(3, R1));
      node.run(spec(3, V2, { maxUnavailable: 1 }));
      assert.deepEqual(node.revisions(), { R2: 3 });
      node.updated = [];
      node.run(spec(3, V1, { maxUnavailable: 1 }));
      assert.deepEqual(node.revisions(), { R1: 3 });
      assert.deepEqual(node.updated, ['web-0', 'web-1', 'web-2']);
      assert.ok(node.rounds.slice(-4).flatMap((r) => r.actions).every((a) => a.kind === 'updateInPlace'));
    });

    it('pods on several old revisions all move to the new one', function () {
      const node = new Node([pod('web-0', R1), pod('web-1', R2), pod('web-2', R1)]);
      const last = node.run(spec(3, V3, { maxUnavailable: 1 }));
      assert.deepEqual(node.revisions(), { [R3]: 3 });
      assert.equal(last.status.currentRevision, R3);
    });

    it('a steady set plans nothing', function () {
      const p = plan(spec(3, V1), pods(3, R1));
      assert.deepEqual(p.actions, []);
      assert.equal(p.status.message, undefined);
      assert.equal(p.status.currentRevision, R1);
    });
  });
});
