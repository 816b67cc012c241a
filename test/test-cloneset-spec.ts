/** CloneSet manifests: parsing, defaults, validation errors naming the field, round trip; int-or-percent arithmetic. */
import { strict as assert } from 'node:assert';
import { stringify } from 'yaml';
import { isLazypullError } from '../src/errors';
import { cloneSetFromObject, parseCloneSet, serializeCloneSet } from '../src/controller/cloneset-spec';
import { isIntOrPercent, resolveIntOrPercent, resolvePartition } from '../src/controller/int-or-percent';
import type { CloneSetSpec } from '../src/controller/types';

const FULL = `
apiVersion: apps.kruise.io/v1alpha1
kind: CloneSet
metadata:
  name: web
  namespace: default
spec:
  replicas: 5
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        zone: a
      annotations:
        note: "first"
    spec:
      containers:
      - name: app
        image: 127.0.0.1:5000/app:v1
        imagePullPolicy: IfNotPresent
        command: ["/bin/server"]
        args: ["--port", "8080"]
        env:
        - name: MODE
          value: prod
        - name: EMPTY
        ports:
        - containerPort: 8080
          protocol: TCP
          name: http
        readinessProbe:
          exec:
            command: ["cat", "/tmp/ready"]
          periodSeconds: 2
          failureThreshold: 5
      - name: sidecar
        image: 127.0.0.1:5000/sidecar:v1
  updateStrategy:
    type: InPlaceIfPossible
    partition: 2
    maxUnavailable: 1
    maxSurge: 0
    paused: false
    priorityStrategy:
      weightPriority:
      - weight: 50
        matchSelector:
          matchLabels:
            zone: a
    scatterStrategy:
    - key: zone
      value: b
    inPlaceUpdateStrategy:
      gracePeriodSeconds: 2
`;

const EXPECTED: CloneSetSpec = {
  name: 'web',
  replicas: 5,
  selector: { matchLabels: { app: 'web' } },
  template: {
    labels: { app: 'web', zone: 'a' },
    annotations: { note: 'first' },
    containers: [
      {
        name: 'app',
        image: '127.0.0.1:5000/app:v1',
        command: ['/bin/server'],
        args: ['--port', '8080'],
        env: [{ name: 'MODE', value: 'prod' }, { name: 'EMPTY', value: '' }],
        ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }],
        readinessProbe: {
          exec: { command: ['cat', '/tmp/ready'], initialDelaySeconds: 0, periodSeconds: 2, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 5 },
        },
      },
      { name: 'sidecar', image: '127.0.0.1:5000/sidecar:v1' },
    ],
  },
  updateStrategy: {
    type: 'InPlaceIfPossible',
    partition: 2,
    maxUnavailable: 1,
    maxSurge: 0,
    paused: false,
    priorityStrategy: { weightPriority: [{ weight: 50, matchSelector: { matchLabels: { zone: 'a' } } }] },
    scatterStrategy: [{ key: 'zone', value: 'b' }],
    inPlaceUpdateStrategy: { gracePeriodSeconds: 2 },
  },
};

/** A minimal valid manifest as an object, to mutate field by field. */
function minimal(): Record<string, any> {
  return {
    apiVersion: 'apps.kruise.io/v1alpha1',
    kind: 'CloneSet',
    metadata: { name: 'web' },
    spec: {
      replicas: 3,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: { containers: [{ name: 'app', image: 'nginx:1' }] },
      },
    },
  };
}

/** `minimal()` with the value at `path` replaced (or removed when `value` is undefined), as YAML. */
function withField(path: Array<string | number>, value: unknown): string {
  const doc = minimal();
  let node: any = doc;
  for (const key of path.slice(0, -1)) {
    if (node[key] === undefined) node[key] = typeof key === 'number' ? [] : {};
    node = node[key];
  }
  const last = path[path.length - 1];
  if (value === undefined) delete node[last];
  else node[last] = value;
  return stringify(doc);
}

function invalid(text: string): { message: string; field: unknown; line: unknown } {
  try {
    parseCloneSet(text);
  } catch (err) {
    assert.ok(isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'), `expected LAZYPULL_ERR_INVALID_ARGUMENT, got ${String(err)}`);
    return { message: err.message, field: err.details.field, line: err.details.line };
  }
  assert.fail('the manifest was accepted');
}

describe('CloneSet spec', function () {
  it('parses a full manifest, filling probe defaults', function () {
    assert.deepEqual(parseCloneSet(FULL), EXPECTED);
  });

  it('reads JSON as well as YAML, and decoded objects', function () {
    const json = JSON.stringify(minimal());
    const fromJson = parseCloneSet(json);
    assert.equal(fromJson.name, 'web');
    assert.deepEqual(cloneSetFromObject(minimal()), fromJson);
  });

  it('fills CloneSet defaults', function () {
    const spec = parseCloneSet(withField(['spec', 'replicas'], undefined));
    assert.equal(spec.replicas, 1);
    assert.deepEqual(spec.template.annotations, {});
    assert.deepEqual(spec.updateStrategy, {
      type: 'ReCreate',
      partition: 0,
      maxUnavailable: '20%',
      maxSurge: 0,
      paused: false,
      inPlaceUpdateStrategy: { gracePeriodSeconds: 0 },
    });
    const probe = parseCloneSet(withField(['spec', 'template', 'spec', 'containers', 0, 'readinessProbe'], { exec: { command: ['true'] } }));
    assert.deepEqual(probe.template.containers[0].readinessProbe, {
      exec: { command: ['true'], initialDelaySeconds: 0, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    });
  });

  it('accepts percentages, orderPriority and the other strategy types', function () {
    const spec = parseCloneSet(withField(['spec', 'updateStrategy'], {
      type: 'InPlaceOnly',
      partition: '40%',
      maxUnavailable: '50%',
      paused: true,
      priorityStrategy: { orderPriority: [{ orderedKey: 'order' }, { orderedKey: 'example.com/rank' }] },
    }));
    assert.equal(spec.updateStrategy.partition, '40%');
    assert.equal(spec.updateStrategy.maxUnavailable, '50%');
    assert.equal(spec.updateStrategy.paused, true);
    assert.deepEqual(spec.updateStrategy.priorityStrategy, { orderPriority: [{ orderedKey: 'order' }, { orderedKey: 'example.com/rank' }] });
  });

  it('round-trips through serializeCloneSet', function () {
    for (const spec of [EXPECTED, parseCloneSet(stringify(minimal())), parseCloneSet(withField(['spec', 'updateStrategy', 'maxSurge'], '25%'))]) {
      const yaml = serializeCloneSet(spec);
      assert.deepEqual(parseCloneSet(yaml), spec);
      assert.equal(serializeCloneSet(parseCloneSet(yaml)), yaml);
    }
  });

  it('keeps label values that look like numbers as strings when serializing', function () {
    const spec = parseCloneSet(withField(['spec', 'template', 'metadata', 'labels'], { app: 'web', version: '2', canary: 'true' }));
    assert.deepEqual(parseCloneSet(serializeCloneSet(spec)).template.labels, { app: 'web', version: '2', canary: 'true' });
  });

  const U = ['spec', 'updateStrategy'];
  const C0 = ['spec', 'template', 'spec', 'containers', 0];
  const cases: Array<{ name: string; text: string; field: string; message: RegExp }> = [
    { name: 'apiVersion', text: withField(['apiVersion'], 'apps/v1'), field: 'apiVersion', message: /must be "apps\.kruise\.io\/v1alpha1"/ },
    { name: 'kind', text: withField(['kind'], 'Deployment'), field: 'kind', message: /must be "CloneSet"/ },
    { name: 'missing name', text: withField(['metadata', 'name'], undefined), field: 'metadata.name', message: /is required/ },
    { name: 'name not a DNS label', text: withField(['metadata', 'name'], 'Web_1'), field: 'metadata.name', message: /DNS label/ },
    { name: 'unknown top-level field', text: withField(['spce'], {}), field: 'spce', message: /unknown or unsupported field/ },
    { name: 'unsupported spec field', text: withField(['spec', 'minReadySeconds'], 10), field: 'spec.minReadySeconds', message: /unknown or unsupported/ },
    { name: 'negative replicas', text: withField(['spec', 'replicas'], -1), field: 'spec.replicas', message: /between 0 and/ },
    { name: 'fractional replicas', text: withField(['spec', 'replicas'], 2.5), field: 'spec.replicas', message: /integer/ },
    { name: 'string replicas', text: withField(['spec', 'replicas'], '3'), field: 'spec.replicas', message: /integer/ },
    { name: 'selector missing', text: withField(['spec', 'selector'], undefined), field: 'spec.selector', message: /is required/ },
    { name: 'empty selector', text: withField(['spec', 'selector', 'matchLabels'], {}), field: 'spec.selector.matchLabels', message: /must not be empty/ },
    { name: 'matchExpressions', text: withField(['spec', 'selector', 'matchExpressions'], []), field: 'spec.selector.matchExpressions', message: /unsupported/ },
    {
      name: 'selector does not match template',
      text: withField(['spec', 'selector', 'matchLabels'], { app: 'api' }),
      field: 'spec.template.metadata.labels',
      message: /`selector` does not match template `labels`/,
    },
    { name: 'label value not a string', text: withField(['spec', 'template', 'metadata', 'labels', 'version'], 2), field: 'spec.template.metadata.labels.version', message: /must be a string/ },
    { name: 'bad label value', text: withField(['spec', 'template', 'metadata', 'labels', 'tier'], 'a b'), field: 'spec.template.metadata.labels.tier', message: /at most 63/ },
    { name: 'no containers', text: withField(['spec', 'template', 'spec', 'containers'], []), field: 'spec.template.spec.containers', message: /at least one/ },
    {
      name: 'duplicate container names',
      text: withField(['spec', 'template', 'spec', 'containers', 1], { name: 'app', image: 'busybox' }),
      field: 'spec.template.spec.containers[1].name',
      message: /duplicate container name "app"/,
    },
    { name: 'image missing', text: withField([...C0, 'image'], undefined), field: 'spec.template.spec.containers[0].image', message: /is required/ },
    { name: 'image empty', text: withField([...C0, 'image'], ''), field: 'spec.template.spec.containers[0].image', message: /must not be empty/ },
    { name: 'container volumeMounts', text: withField([...C0, 'volumeMounts'], []), field: 'spec.template.spec.containers[0].volumeMounts', message: /unsupported/ },
    { name: 'numeric arg', text: withField([...C0, 'args'], ['--port', 8080]), field: 'spec.template.spec.containers[0].args[1]', message: /must be a string/ },
    { name: 'port out of range', text: withField([...C0, 'ports'], [{ containerPort: 70000 }]), field: 'spec.template.spec.containers[0].ports[0].containerPort', message: /between 1 and 65535/ },
    { name: 'port protocol', text: withField([...C0, 'ports'], [{ containerPort: 80, protocol: 'SCTP' }]), field: 'spec.template.spec.containers[0].ports[0].protocol', message: /"TCP" or "UDP"/ },
    { name: 'http probe', text: withField([...C0, 'readinessProbe'], { httpGet: { port: 80 } }), field: 'spec.template.spec.containers[0].readinessProbe.httpGet', message: /only exec/ },
    {
      name: 'probe period 0',
      text: withField([...C0, 'readinessProbe'], { exec: { command: ['true'] }, periodSeconds: 0 }),
      field: 'spec.template.spec.containers[0].readinessProbe.periodSeconds',
      message: /between 1 and/,
    },
    {
      name: 'probe negative delay',
      text: withField([...C0, 'readinessProbe'], { exec: { command: ['true'] }, initialDelaySeconds: -1 }),
      field: 'spec.template.spec.containers[0].readinessProbe.initialDelaySeconds',
      message: /between 0 and/,
    },
    {
      name: 'probe empty command',
      text: withField([...C0, 'readinessProbe'], { exec: { command: [] } }),
      field: 'spec.template.spec.containers[0].readinessProbe.exec.command',
      message: /must not be empty/,
    },
    { name: 'restartPolicy', text: withField(['spec', 'template', 'spec', 'restartPolicy'], 'Never'), field: 'spec.template.spec.restartPolicy', message: /"Always"/ },
    { name: 'update type', text: withField([...U, 'type'], 'RollingUpdate'), field: 'spec.updateStrategy.type', message: /"ReCreate", "InPlaceIfPossible", "InPlaceOnly"/ },
    { name: 'partition negative', text: withField([...U, 'partition'], -1), field: 'spec.updateStrategy.partition', message: /int or a percentage/ },
    { name: 'partition bad %', text: withField([...U, 'partition'], '10 %'), field: 'spec.updateStrategy.partition', message: /int or a percentage/ },
    { name: 'maxUnavailable word', text: withField([...U, 'maxUnavailable'], 'half'), field: 'spec.updateStrategy.maxUnavailable', message: /must be an int or a percentage like "20%"/ },
    { name: 'maxUnavailable > 100%', text: withField([...U, 'maxUnavailable'], '150%'), field: 'spec.updateStrategy.maxUnavailable', message: /100%/ },
    { name: 'maxSurge fraction', text: withField([...U, 'maxSurge'], 1.5), field: 'spec.updateStrategy.maxSurge', message: /int or a percentage/ },
    { name: 'both zero', text: withField([...U], { maxUnavailable: 0, maxSurge: 0 }), field: 'spec.updateStrategy.maxUnavailable', message: /must not both be 0/ },
    { name: 'both zero as %', text: withField([...U], { maxUnavailable: '0%', maxSurge: '0%' }), field: 'spec.updateStrategy.maxUnavailable', message: /must not both be 0/ },
    { name: 'maxSurge with InPlaceOnly', text: withField([...U], { type: 'InPlaceOnly', maxSurge: 1 }), field: 'spec.updateStrategy.maxSurge', message: /InPlaceOnly/ },
    { name: 'paused not boolean', text: withField([...U, 'paused'], 'yes'), field: 'spec.updateStrategy.paused', message: /true or false/ },
    {
      name: 'negative grace period',
      text: withField([...U, 'inPlaceUpdateStrategy'], { gracePeriodSeconds: -5 }),
      field: 'spec.updateStrategy.inPlaceUpdateStrategy.gracePeriodSeconds',
      message: /between 0 and/,
    },
    {
      name: 'both priority kinds',
      text: withField([...U, 'priorityStrategy'], { weightPriority: [{ weight: 1, matchSelector: { matchLabels: { a: 'b' } } }], orderPriority: [{ orderedKey: 'x' }] }),
      field: 'spec.updateStrategy.priorityStrategy',
      message: /only one of weightPriority and orderPriority/,
    },
    {
      name: 'weight above 100',
      text: withField([...U, 'priorityStrategy'], { weightPriority: [{ weight: 101, matchSelector: { matchLabels: { a: 'b' } } }] }),
      field: 'spec.updateStrategy.priorityStrategy.weightPriority[0].weight',
      message: /between 0 and 100/,
    },
    {
      name: 'empty weight selector',
      text: withField([...U, 'priorityStrategy'], { weightPriority: [{ weight: 10, matchSelector: { matchLabels: {} } }] }),
      field: 'spec.updateStrategy.priorityStrategy.weightPriority[0].matchSelector.matchLabels',
      message: /must not be empty/,
    },
    {
      name: 'empty orderedKey',
      text: withField([...U, 'priorityStrategy'], { orderPriority: [{ orderedKey: '' }] }),
      field: 'spec.updateStrategy.priorityStrategy.orderPriority[0].orderedKey',
      message: /must not be empty/,
    },
    {
      name: 'duplicate scatter term',
      text: withField([...U, 'scatterStrategy'], [{ key: 'zone', value: 'a' }, { key: 'zone', value: 'a' }]),
      field: 'spec.updateStrategy.scatterStrategy[1]',
      message: /duplicate scatter term zone=a/,
    },
    { name: 'scatter term without value', text: withField([...U, 'scatterStrategy'], [{ key: 'zone' }]), field: 'spec.updateStrategy.scatterStrategy[0].value', message: /is required/ },
  ];

  describe('rejects invalid fields, naming them', function () {
    for (const c of cases) {
      it(c.name, function () {
        const { message, field, line } = invalid(c.text);
        assert.equal(field, c.field);
        assert.ok(message.startsWith(`${c.field}: `), message);
        assert.match(message, c.message);
        assert.equal(typeof line, 'number', 'the error carries the line of the field');
      });
    }
  });

  it('reports the line of the offending field', function () {
    const text = FULL.replace('maxUnavailable: 1', 'maxUnavailable: lots');
    const { message, line } = invalid(text);
    const expectedLine = text.split('\n').findIndex((l) => l.includes('maxUnavailable: lots')) + 1;
    assert.equal(line, expectedLine);
    assert.match(message, new RegExp(`^spec\\.updateStrategy\\.maxUnavailable: must be an int or a percentage like "20%", not "lots" \\(line ${expectedLine}\\)$`));
  });

  it('rejects malformed YAML with its line', function () {
    for (const [text, line] of [
      ['apiVersion: apps.kruise.io/v1alpha1\nkind: CloneSet\nspec:\n  replicas: [1, 2\n', 5],
      ['a: 1\na: 2\n', 2],
      ['a: 1\n---\nb: 2\n', 2],
      ['spec:\n\treplicas: 1\n', 2],
    ] as const) {
      const err = invalid(text);
      assert.match(err.message, /^malformed YAML at line \d+, column \d+: /);
      assert.equal(err.line, line, err.message);
    }
  });

  it('rejects an empty document and a non-mapping', function () {
    assert.match(invalid('').message, /empty/);
    assert.match(invalid('- a\n- b\n').message, /^manifest: must be a mapping, not a list/);
  });
});

describe('int or percent', function () {
  it('recognises ints and percentages', function () {
    for (const ok of [0, 3, '0%', '20%', '150%']) assert.equal(isIntOrPercent(ok), true, String(ok));
    for (const bad of [-1, 1.5, '3', '20 %', '-5%', '1.5%', '%', '', null, true]) assert.equal(isIntOrPercent(bad), false, String(bad));
  });

  const table: Array<[number | string, number, boolean, number]> = [
    [2, 10, true, 2],
    [7, 3, false, 7],
    ['20%', 5, false, 1],
    ['20%', 5, true, 1],
    ['20%', 3, false, 0],
    ['20%', 3, true, 1],
    ['25%', 10, false, 2],
    ['25%', 10, true, 3],
    ['100%', 7, false, 7],
    ['0%', 7, true, 0],
    ['150%', 4, true, 6],
    ['33%', 100, false, 33],
    ['10%', 0, true, 0],
  ];
  for (const [value, total, roundUp, expected] of table) {
    it(`${JSON.stringify(value)} of ${total} rounded ${roundUp ? 'up' : 'down'} is ${expected}`, function () {
      assert.equal(resolveIntOrPercent(value, total, roundUp), expected);
    });
  }

  it('throws on invalid values', function () {
    assert.throws(() => resolveIntOrPercent('abc', 10, true), (err: unknown) => isLazypullError(err, 'LAZYPULL_ERR_INVALID_ARGUMENT'));
  });

  const partitions: Array<[number | string, number, number]> = [
    [2, 5, 2],
    [9, 5, 5],
    ['40%', 5, 2],
    ['50%', 5, 3], // rounds up: keeps more old pods
    ['1%', 5, 1], // above 0% keeps at least one old pod
    ['99%', 5, 4], // below 100% updates at least one pod
    ['100%', 5, 5],
    ['0%', 5, 0],
    ['99%', 1, 1],
    [3, 0, 0],
  ];
  for (const [partition, replicas, expected] of partitions) {
    it(`partition ${JSON.stringify(partition)} of ${replicas} replicas keeps ${expected} old`, function () {
      assert.equal(resolvePartition(partition, replicas), expected);
    });
  }
});
