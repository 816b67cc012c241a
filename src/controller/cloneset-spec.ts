/**
 * The CloneSet manifest (`apps.kruise.io/v1alpha1`, `kind: CloneSet`): parse
 * and validate YAML or JSON into a `CloneSetSpec` with every default filled
 * in, and write one back. Every rejection is a LAZYPULL_ERR_INVALID_ARGUMENT
 * whose message starts with the field path (`spec.updateStrategy.maxSurge:
 * ...`) and whose details carry `field` and, when known, `line`.
 *
 * Only what lazypull runs is accepted: a field it does not understand is an
 * error, not silently dropped; a few fields that change nothing on a node
 * (metadata.namespace, imagePullPolicy, ...) are accepted and ignored so
 * manifests written for a cluster still load.
 */
import { Document, LineCounter, parseDocument, stringify } from 'yaml';
import { LazypullError } from '../errors';
import { isIntOrPercent, resolveIntOrPercent } from './int-or-percent';
import { labelKeyProblem, labelValueProblem } from './label-syntax';
import type {
  CloneSetSpec,
  ContainerSpec,
  ExecProbe,
  IntOrPercent,
  PodTemplate,
  PriorityStrategy,
  ScatterStrategy,
  UpdateStrategy,
  UpdateStrategyType,
} from './types';

export const CLONESET_API_VERSION = 'apps.kruise.io/v1alpha1';
export const CLONESET_KIND = 'CloneSet';
/** CloneSet's defaults (v1alpha1). */
export const DEFAULT_UPDATE_STRATEGY_TYPE: UpdateStrategyType = 'ReCreate';
export const DEFAULT_MAX_UNAVAILABLE: IntOrPercent = '20%';
export const DEFAULT_MAX_SURGE: IntOrPercent = 0;
export const DEFAULT_REPLICAS = 1;
/** Kubernetes' probe defaults. */
export const DEFAULT_PROBE: Omit<ExecProbe, 'command'> = {
  initialDelaySeconds: 0,
  periodSeconds: 10,
  timeoutSeconds: 1,
  successThreshold: 1,
  failureThreshold: 3,
};

const UPDATE_TYPES: UpdateStrategyType[] = ['ReCreate', 'InPlaceIfPossible', 'InPlaceOnly'];
const MAX_INT32 = 2147483647;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

type Path = Array<string | number>;
type Obj = Record<string, unknown>;

/** Parse and validate a CloneSet manifest (YAML or JSON). */
export function parseCloneSet(text: string): CloneSetSpec {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const pos = error.linePos?.[0];
    const where = pos ? ` at line ${pos.line}, column ${pos.col}` : '';
    const message = error.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `malformed YAML${where}: ${message}`, {
      field: '',
      line: pos?.line,
      column: pos?.col,
    });
  }
  return new SpecReader(doc, lineCounter).read(doc.toJS({ maxAliasCount: 100 }));
}

/** Validate an already decoded manifest object (for example a JSON request body). */
export function cloneSetFromObject(manifest: unknown): CloneSetSpec {
  return new SpecReader().read(manifest);
}

/** The manifest back as YAML, with every default spelled out; `parseCloneSet` reads it back to an equal spec. */
export function serializeCloneSet(spec: CloneSetSpec): string {
  return stringify(cloneSetManifest(spec));
}

/** The manifest as a plain object (what `serializeCloneSet` writes). */
export function cloneSetManifest(spec: CloneSetSpec): Obj {
  const templateMetadata: Obj = { labels: { ...spec.template.labels } };
  if (Object.keys(spec.template.annotations).length > 0) templateMetadata.annotations = { ...spec.template.annotations };
  const u = spec.updateStrategy;
  const updateStrategy: Obj = {
    type: u.type,
    partition: u.partition,
    maxUnavailable: u.maxUnavailable,
    maxSurge: u.maxSurge,
    paused: u.paused,
  };
  if (u.priorityStrategy) updateStrategy.priorityStrategy = clean(u.priorityStrategy);
  if (u.scatterStrategy) updateStrategy.scatterStrategy = u.scatterStrategy.map((t) => ({ key: t.key, value: t.value }));
  updateStrategy.inPlaceUpdateStrategy = { gracePeriodSeconds: u.inPlaceUpdateStrategy.gracePeriodSeconds };
  return {
    apiVersion: CLONESET_API_VERSION,
    kind: CLONESET_KIND,
    metadata: { name: spec.name },
    spec: {
      replicas: spec.replicas,
      selector: { matchLabels: { ...spec.selector.matchLabels } },
      template: {
        metadata: templateMetadata,
        spec: { containers: spec.template.containers.map(containerManifest) },
      },
      updateStrategy,
    },
  };
}

/** A container as Kubernetes writes it: probe timings beside `exec`, not inside it. */
function containerManifest(container: ContainerSpec): Obj {
  const { readinessProbe, ...rest } = container;
  const out = clean(rest) as Obj;
  if (readinessProbe) {
    const { command, ...timings } = readinessProbe.exec;
    out.readinessProbe = { exec: { command: [...command] }, ...timings };
  }
  return out;
}

/** Deep copy without undefined fields (the YAML writer would print them as null). */
function clean<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function display(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

class SpecReader {
  constructor(
    private readonly doc?: Document,
    private readonly lineCounter?: LineCounter,
  ) {}

  read(manifest: unknown): CloneSetSpec {
    if (manifest === null || manifest === undefined) this.fail([], 'the document is empty; expected a CloneSet manifest');
    const root = this.obj(manifest, []);
    this.allowKeys(root, [], ['apiVersion', 'kind', 'metadata', 'spec'], ['status']);

    const apiVersion = this.str(root.apiVersion, ['apiVersion']);
    if (apiVersion !== CLONESET_API_VERSION) this.fail(['apiVersion'], `must be "${CLONESET_API_VERSION}", not ${JSON.stringify(apiVersion)}`);
    const kind = this.str(root.kind, ['kind']);
    if (kind !== CLONESET_KIND) this.fail(['kind'], `must be "${CLONESET_KIND}", not ${JSON.stringify(kind)}`);

    const metadata = this.obj(root.metadata, ['metadata']);
    this.allowKeys(metadata, ['metadata'], ['name'], ['namespace', 'labels', 'annotations', 'uid', 'resourceVersion', 'generation', 'creationTimestamp']);
    const name = this.str(metadata.name, ['metadata', 'name']);
    if (name.length > 63 || !DNS_LABEL.test(name)) {
      this.fail(['metadata', 'name'], `${JSON.stringify(name)} must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit`);
    }

    const spec = this.obj(root.spec, ['spec']);
    this.allowKeys(spec, ['spec'], ['replicas', 'selector', 'template', 'updateStrategy'], ['revisionHistoryLimit']);
    const replicas = spec.replicas == null ? DEFAULT_REPLICAS : this.int(spec.replicas, ['spec', 'replicas'], 0, MAX_INT32);

    const selectorPath: Path = ['spec', 'selector'];
    const selector = this.obj(spec.selector, selectorPath);
    this.allowKeys(selector, selectorPath, ['matchLabels']);
    const matchLabels = this.labels(selector.matchLabels, [...selectorPath, 'matchLabels']);
    if (Object.keys(matchLabels).length === 0) this.fail([...selectorPath, 'matchLabels'], 'must not be empty (an empty selector is invalid for a CloneSet)');

    const template = this.template(spec.template, ['spec', 'template']);
    for (const [key, value] of Object.entries(matchLabels)) {
      if (template.labels[key] !== value) {
        this.fail(['spec', 'template', 'metadata', 'labels'], `\`selector\` does not match template \`labels\`: missing ${key}=${value}`);
      }
    }

    const updateStrategy = this.updateStrategy(spec.updateStrategy, ['spec', 'updateStrategy'], replicas);
    return { name, replicas, selector: { matchLabels }, template, updateStrategy };
  }

  private template(value: unknown, path: Path): PodTemplate {
    const template = this.obj(value, path);
    this.allowKeys(template, path, ['metadata', 'spec']);
    const metaPath = [...path, 'metadata'];
    const metadata = this.obj(template.metadata, metaPath);
    this.allowKeys(metadata, metaPath, ['labels', 'annotations'], ['creationTimestamp']);
    const labels = this.labels(metadata.labels, [...metaPath, 'labels']);
    const annotations = this.annotations(metadata.annotations, [...metaPath, 'annotations']);

    const specPath = [...path, 'spec'];
    const podSpec = this.obj(template.spec, specPath);
    this.allowKeys(podSpec, specPath, ['containers'], ['restartPolicy']);
    if (podSpec.restartPolicy != null && podSpec.restartPolicy !== 'Always') {
      this.fail([...specPath, 'restartPolicy'], `must be "Always" for a CloneSet, not ${JSON.stringify(podSpec.restartPolicy)}`);
    }
    const containersPath = [...specPath, 'containers'];
    const list = this.array(podSpec.containers, containersPath);
    if (list.length === 0) this.fail(containersPath, 'must list at least one container');
    const containers = list.map((c, i) => this.container(c, [...containersPath, i]));
    const seen = new Set<string>();
    containers.forEach((c, i) => {
      if (seen.has(c.name)) this.fail([...containersPath, i, 'name'], `duplicate container name ${JSON.stringify(c.name)}`);
      seen.add(c.name);
    });
    return { labels, annotations, containers };
  }

  private container(value: unknown, path: Path): ContainerSpec {
    const c = this.obj(value, path);
    this.allowKeys(c, path, ['name', 'image', 'command', 'args', 'env', 'ports', 'readinessProbe'], [
      'imagePullPolicy',
      'terminationMessagePath',
      'terminationMessagePolicy',
    ]);
    const name = this.str(c.name, [...path, 'name']);
    if (name.length > 63 || !DNS_LABEL.test(name)) {
      this.fail([...path, 'name'], `${JSON.stringify(name)} must be a DNS label: at most 63 lowercase letters, digits and '-'`);
    }
    const image = this.str(c.image, [...path, 'image']);
    if (/\s/.test(image)) this.fail([...path, 'image'], `${JSON.stringify(image)} must not contain whitespace`);
    const out: ContainerSpec = { name, image };
    if (c.command != null) out.command = this.strings(c.command, [...path, 'command']);
    if (c.args != null) out.args = this.strings(c.args, [...path, 'args']);
    if (c.env != null) {
      out.env = this.array(c.env, [...path, 'env']).map((item, i) => {
        const envPath = [...path, 'env', i];
        const e = this.obj(item, envPath);
        this.allowKeys(e, envPath, ['name', 'value']);
        const envName = this.str(e.name, [...envPath, 'name']);
        if (envName.includes('=')) this.fail([...envPath, 'name'], `${JSON.stringify(envName)} must not contain '='`);
        const envValue = e.value == null ? '' : this.str(e.value, [...envPath, 'value'], true);
        return { name: envName, value: envValue };
      });
    }
    if (c.ports != null) {
      out.ports = this.array(c.ports, [...path, 'ports']).map((item, i) => {
        const portPath = [...path, 'ports', i];
        const p = this.obj(item, portPath);
        this.allowKeys(p, portPath, ['containerPort', 'protocol', 'name']);
        const port: NonNullable<ContainerSpec['ports']>[number] = { containerPort: this.int(p.containerPort, [...portPath, 'containerPort'], 1, 65535) };
        if (p.protocol != null) {
          if (p.protocol !== 'TCP' && p.protocol !== 'UDP') this.fail([...portPath, 'protocol'], `must be "TCP" or "UDP", not ${JSON.stringify(p.protocol)}`);
          port.protocol = p.protocol;
        }
        if (p.name != null) {
          const portName = this.str(p.name, [...portPath, 'name']);
          if (portName.length > 15 || !PORT_NAME.test(portName) || !/[a-z]/.test(portName)) {
            this.fail([...portPath, 'name'], `${JSON.stringify(portName)} must be at most 15 lowercase letters, digits and '-', with at least one letter`);
          }
          port.name = portName;
        }
        return port;
      });
    }
    if (c.readinessProbe != null) out.readinessProbe = { exec: this.probe(c.readinessProbe, [...path, 'readinessProbe']) };
    return out;
  }

  private probe(value: unknown, path: Path): ExecProbe {
    const p = this.obj(value, path);
    for (const key of ['httpGet', 'tcpSocket', 'grpc']) {
      if (key in p) this.fail([...path, key], 'only exec readiness probes are supported');
    }
    this.allowKeys(p, path, ['exec', 'initialDelaySeconds', 'periodSeconds', 'timeoutSeconds', 'successThreshold', 'failureThreshold']);
    const execPath = [...path, 'exec'];
    const exec = this.obj(p.exec, execPath);
    this.allowKeys(exec, execPath, ['command']);
    const command = this.strings(exec.command, [...execPath, 'command']);
    if (command.length === 0) this.fail([...execPath, 'command'], 'must not be empty');
    const num = (key: keyof typeof DEFAULT_PROBE, min: number): number =>
      p[key] == null ? DEFAULT_PROBE[key] : this.int(p[key], [...path, key], min, MAX_INT32);
    return {
      command,
      initialDelaySeconds: num('initialDelaySeconds', 0),
      periodSeconds: num('periodSeconds', 1),
      timeoutSeconds: num('timeoutSeconds', 1),
      successThreshold: num('successThreshold', 1),
      failureThreshold: num('failureThreshold', 1),
    };
  }

  private updateStrategy(value: unknown, path: Path, replicas: number): UpdateStrategy {
    const u = value == null ? {} : this.obj(value, path);
    this.allowKeys(u, path, ['type', 'partition', 'maxUnavailable', 'maxSurge', 'paused', 'priorityStrategy', 'scatterStrategy', 'inPlaceUpdateStrategy']);

    let type = DEFAULT_UPDATE_STRATEGY_TYPE;
    if (u.type != null) {
      if (!UPDATE_TYPES.includes(u.type as UpdateStrategyType)) {
        this.fail([...path, 'type'], `must be one of ${UPDATE_TYPES.map((t) => `"${t}"`).join(', ')}, not ${JSON.stringify(u.type)}`);
      }
      type = u.type as UpdateStrategyType;
    }
    const partition = u.partition == null ? 0 : this.intOrPercent(u.partition, [...path, 'partition'], false);
    const maxUnavailable = u.maxUnavailable == null ? DEFAULT_MAX_UNAVAILABLE : this.intOrPercent(u.maxUnavailable, [...path, 'maxUnavailable'], true);
    const maxSurge = u.maxSurge == null ? DEFAULT_MAX_SURGE : this.intOrPercent(u.maxSurge, [...path, 'maxSurge'], false);
    const surge = resolveIntOrPercent(maxSurge, replicas, true);
    if (type === 'InPlaceOnly' && surge > 0) {
      this.fail([...path, 'maxSurge'], 'can not be used with type "InPlaceOnly" (surge pods are new pods, not in-place updates)');
    }
    if (replicas > 0 && resolveIntOrPercent(maxUnavailable, replicas, true) < 1 && surge < 1) {
      this.fail([...path, 'maxUnavailable'], 'maxUnavailable and maxSurge must not both be 0: the update could never start');
    }
    let paused = false;
    if (u.paused != null) {
      if (typeof u.paused !== 'boolean') this.fail([...path, 'paused'], `must be true or false, not ${JSON.stringify(u.paused)}`);
      paused = u.paused;
    }

    const strategy: UpdateStrategy = { type, partition, maxUnavailable, maxSurge, paused, inPlaceUpdateStrategy: { gracePeriodSeconds: 0 } };
    if (u.priorityStrategy != null) strategy.priorityStrategy = this.priority(u.priorityStrategy, [...path, 'priorityStrategy']);
    if (u.scatterStrategy != null) strategy.scatterStrategy = this.scatter(u.scatterStrategy, [...path, 'scatterStrategy']);
    if (u.inPlaceUpdateStrategy != null) {
      const ipPath = [...path, 'inPlaceUpdateStrategy'];
      const ip = this.obj(u.inPlaceUpdateStrategy, ipPath);
      this.allowKeys(ip, ipPath, ['gracePeriodSeconds']);
      if (ip.gracePeriodSeconds != null) {
        strategy.inPlaceUpdateStrategy.gracePeriodSeconds = this.int(ip.gracePeriodSeconds, [...ipPath, 'gracePeriodSeconds'], 0, MAX_INT32);
      }
    }
    return strategy;
  }

  private priority(value: unknown, path: Path): PriorityStrategy {
    const p = this.obj(value, path);
    this.allowKeys(p, path, ['weightPriority', 'orderPriority']);
    if (p.weightPriority != null && p.orderPriority != null) {
      this.fail(path, 'only one of weightPriority and orderPriority can be used');
    }
    const out: PriorityStrategy = {};
    if (p.weightPriority != null) {
      out.weightPriority = this.array(p.weightPriority, [...path, 'weightPriority']).map((item, i) => {
        const termPath = [...path, 'weightPriority', i];
        const term = this.obj(item, termPath);
        this.allowKeys(term, termPath, ['weight', 'matchSelector']);
        const weight = this.int(term.weight, [...termPath, 'weight'], 0, 100);
        const selPath = [...termPath, 'matchSelector'];
        const sel = this.obj(term.matchSelector, selPath);
        this.allowKeys(sel, selPath, ['matchLabels']);
        const matchLabels = this.labels(sel.matchLabels, [...selPath, 'matchLabels']);
        if (Object.keys(matchLabels).length === 0) this.fail([...selPath, 'matchLabels'], 'must not be empty');
        return { weight, matchSelector: { matchLabels } };
      });
    }
    if (p.orderPriority != null) {
      out.orderPriority = this.array(p.orderPriority, [...path, 'orderPriority']).map((item, i) => {
        const termPath = [...path, 'orderPriority', i];
        const term = this.obj(item, termPath);
        this.allowKeys(term, termPath, ['orderedKey']);
        const orderedKey = this.str(term.orderedKey, [...termPath, 'orderedKey']);
        this.labelKey(orderedKey, [...termPath, 'orderedKey']);
        return { orderedKey };
      });
    }
    return out;
  }

  private scatter(value: unknown, path: Path): ScatterStrategy {
    const seen = new Set<string>();
    return this.array(value, path).map((item, i) => {
      const termPath = [...path, i];
      const term = this.obj(item, termPath);
      this.allowKeys(term, termPath, ['key', 'value']);
      const key = this.str(term.key, [...termPath, 'key']);
      this.labelKey(key, [...termPath, 'key']);
      const v = this.str(term.value, [...termPath, 'value']);
      const id = `${key}=${v}`;
      if (seen.has(id)) this.fail(termPath, `duplicate scatter term ${id}`);
      seen.add(id);
      return { key, value: v };
    });
  }

  // ---- primitives ----

  private fail(path: Path, problem: string): never {
    const field = display(path);
    const line = this.lineOf(path);
    const where = line === undefined ? '' : ` (line ${line})`;
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${field === '' ? 'manifest' : field}: ${problem}${where}`, { field, line });
  }

  /** Line of the nearest node on the path that exists in the source document. */
  private lineOf(path: Path): number | undefined {
    if (!this.doc || !this.lineCounter) return undefined;
    for (let n = path.length; n > 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && node.range) return this.lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  }

  private allowKeys(value: Obj, path: Path, allowed: string[], ignored: string[] = []): void {
    for (const key of Object.keys(value)) {
      if (allowed.includes(key) || ignored.includes(key)) continue;
      this.fail([...path, key], `unknown or unsupported field (supported here: ${allowed.join(', ')})`);
    }
  }

  private obj(value: unknown, path: Path): Obj {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (!isObj(value)) this.fail(path, `must be a mapping, not ${describe(value)}`);
    return value;
  }

  private array(value: unknown, path: Path): unknown[] {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (!Array.isArray(value)) this.fail(path, `must be a list, not ${describe(value)}`);
    return value;
  }

  private str(value: unknown, path: Path, allowEmpty = false): string {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (typeof value !== 'string') this.fail(path, `must be a string, not ${describe(value)} (quote it)`);
    if (!allowEmpty && value === '') this.fail(path, 'must not be empty');
    return value;
  }

  private strings(value: unknown, path: Path): string[] {
    return this.array(value, path).map((item, i) => this.str(item, [...path, i], true));
  }

  private int(value: unknown, path: Path, min: number, max: number): number {
    if (value === undefined || value === null) this.fail(path, 'is required');
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(path, `must be an integer, not ${describe(value)}`);
    if (value < min || value > max) this.fail(path, `must be between ${min} and ${max}, not ${value}`);
    return value;
  }

  private intOrPercent(value: unknown, path: Path, atMost100: boolean): IntOrPercent {
    if (!isIntOrPercent(value)) this.fail(path, `must be an int or a percentage like "20%", not ${describe(value)}`);
    if (atMost100 && typeof value === 'string' && Number(value.slice(0, -1)) > 100) this.fail(path, `must not be more than "100%", not ${JSON.stringify(value)}`);
    return value;
  }

  private labels(value: unknown, path: Path): Record<string, string> {
    if (value == null) return {};
    const map = this.obj(value, path);
    const out: Record<string, string> = {};
    for (const [key, v] of Object.entries(map)) {
      this.labelKey(key, [...path, key]);
      const s = this.str(v, [...path, key], true);
      const problem = labelValueProblem(s);
      if (problem !== undefined) this.fail([...path, key], problem);
      out[key] = s;
    }
    return out;
  }

  private annotations(value: unknown, path: Path): Record<string, string> {
    if (value == null) return {};
    const map = this.obj(value, path);
    const out: Record<string, string> = {};
    for (const [key, v] of Object.entries(map)) {
      this.labelKey(key, [...path, key]);
      out[key] = this.str(v, [...path, key], true);
    }
    return out;
  }

  private labelKey(key: string, path: Path): void {
    const problem = labelKeyProblem(key);
    if (problem !== undefined) this.fail(path, problem);
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return JSON.stringify(value);
}
