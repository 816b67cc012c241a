/** Template revisions: a stable hash, and which changes allow an in-place update. */
import { strict as assert } from 'node:assert';
import { diffTemplates, revisionHash, stableJson } from '../src/controller/revision';
import type { ContainerSpec, PodTemplate } from '../src/controller/types';

function template(overrides: Partial<PodTemplate> = {}, app: Partial<ContainerSpec> = {}): PodTemplate {
  return {
    labels: { app: 'web' },
    annotations: {},
    containers: [
      { name: 'app', image: 'reg/app:v1', command: ['/server'], args: ['--port', '80'], env: [{ name: 'A', value: '1' }], ports: [{ containerPort: 80 }], ...app },
      { name: 'sidecar', image: 'reg/sidecar:v1' },
    ],
    ...overrides,
  };
}

describe('revision hash', function () {
  it('is short lowercase hex', function () {
    assert.match(revisionHash(template()), /^[0-9a-f]{10}$/);
  });

  it('ignores key order, spelled-out defaults and empty optional lists', function () {
    const a = template();
    const reordered: PodTemplate = JSON.parse(JSON.stringify({ containers: a.containers, annotations: {}, labels: { app: 'web' } }));
    reordered.containers[0] = { ports: [{ protocol: 'TCP', containerPort: 80 }], env: [{ value: '1', name: 'A' }], args: ['--port', '80'], command: ['/server'], image: 'reg/app:v1', name: 'app' };
    reordered.containers[1] = { name: 'sidecar', image: 'reg/sidecar:v1', command: [], env: [] };
    assert.equal(revisionHash(reordered), revisionHash(a));
  });

  it('changes with anything that defines the pod', function () {
    const base = revisionHash(template());
    const variants: PodTemplate[] = [
      template({}, { image: 'reg/app:v2' }),
      template({}, { command: ['/other'] }),
      template({}, { args: ['--port', '81'] }),
      template({}, { env: [{ name: 'A', value: '2' }] }),
      template({}, { ports: [{ containerPort: 81 }] }),
      template({ labels: { app: 'web', v: '2' } }),
      template({ annotations: { note: 'x' } }),
      { ...template(), containers: [...template().containers].reverse() },
    ];
    const hashes = new Set(variants.map(revisionHash));
    assert.equal(hashes.size, variants.length);
    assert.ok(!hashes.has(base));
  });

  it('stableJson sorts keys at every level and keeps array order', function () {
    assert.equal(stableJson({ b: [2, 1], a: { d: 1, c: undefined, b: null } }), '{"a":{"b":null,"d":1},"b":[2,1]}');
  });
});

describe('template diff', function () {
  const cases: Array<{ name: string; to: PodTemplate; inPlace: boolean; changed: string[]; reason?: RegExp }> = [
    { name: 'identical', to: template(), inPlace: true, changed: [] },
    { name: 'image of one container', to: template({}, { image: 'reg/app:v2' }), inPlace: true, changed: ['app'] },
    {
      name: 'both images',
      to: { ...template(), containers: [{ ...template().containers[0], image: 'reg/app:v2' }, { name: 'sidecar', image: 'reg/sidecar:v2' }] },
      inPlace: true,
      changed: ['app', 'sidecar'],
    },
    { name: 'labels and annotations only', to: template({ labels: { app: 'web', v: '2' }, annotations: { a: 'b' } }), inPlace: true, changed: [] },
    {
      name: 'command',
      to: template({}, { command: ['/other'] }),
      inPlace: false,
      changed: [],
      reason: /^container "app": command changed \(spec\.template\.spec\.containers\[0\]\.command\)$/,
    },
    {
      name: 'image and env',
      to: template({}, { image: 'reg/app:v2', env: [] }),
      inPlace: false,
      changed: ['app'],
      reason: /^container "app": env changed/,
    },
    { name: 'args and ports', to: template({}, { args: [], ports: [{ containerPort: 81 }] }), inPlace: false, changed: [], reason: /container "app": args, ports changed/ },
    {
      name: 'readiness probe',
      to: template({}, { readinessProbe: { exec: { command: ['true'], initialDelaySeconds: 0, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 } } }),
      inPlace: false,
      changed: [],
      reason: /readinessProbe changed/,
    },
    {
      name: 'container added',
      to: { ...template(), containers: [...template().containers, { name: 'log', image: 'reg/log:v1' }] },
      inPlace: false,
      changed: [],
      reason: /container "log" added/,
    },
    { name: 'container removed', to: { ...template(), containers: [template().containers[0]] }, inPlace: false, changed: [], reason: /container "sidecar" removed/ },
    { name: 'containers reordered', to: { ...template(), containers: [...template().containers].reverse() }, inPlace: false, changed: [], reason: /container order changed/ },
  ];
  for (const c of cases) {
    it(c.name, function () {
      const diff = diffTemplates(template(), c.to);
      assert.equal(diff.inPlacePossible, c.inPlace, diff.reason);
      assert.deepEqual(diff.changedContainers, c.changed);
      if (c.reason) assert.match(diff.reason ?? '', c.reason);
      else assert.equal(diff.reason, undefined);
    });
  }
});
