/**
 * Revisions of a pod template: a stable hash (the pod's
 * `controller-revision-hash`) and the comparison that decides whether a pod
 * can move from one revision to another in place.
 *
 * As in OpenKruise, an in-place update may change container images and the
 * template's labels and annotations; anything else in a container (command,
 * args, env, ports, probe) or the set of containers needs a new pod.
 */
import { createHash } from 'node:crypto';
import type { ContainerSpec, PodTemplate } from './types';

/** Length of the hex hash; Kubernetes' revision hashes are 8-10 characters. */
const HASH_LENGTH = 10;

/** Fields of a container, in the order a reason names them. */
const CONTAINER_FIELDS = ['image', 'command', 'args', 'env', 'ports', 'readinessProbe'] as const;
type ContainerField = typeof CONTAINER_FIELDS[number];

/**
 * A template in canonical form: optional lists that are empty are dropped,
 * a port's protocol defaults to TCP, undefined fields vanish. Two templates
 * that mean the same pod have the same canonical form.
 */
export function canonicalTemplate(template: PodTemplate): PodTemplate {
  return {
    labels: { ...(template.labels ?? {}) },
    annotations: { ...(template.annotations ?? {}) },
    containers: (template.containers ?? []).map(canonicalContainer),
  };
}

function canonicalContainer(c: ContainerSpec): ContainerSpec {
  const out: ContainerSpec = { name: c.name, image: c.image };
  if (c.command && c.command.length > 0) out.command = [...c.command];
  if (c.args && c.args.length > 0) out.args = [...c.args];
  if (c.env && c.env.length > 0) out.env = c.env.map((e) => ({ name: e.name, value: e.value ?? '' }));
  if (c.ports && c.ports.length > 0) {
    out.ports = c.ports.map((p) => {
      const port: NonNullable<ContainerSpec['ports']>[number] = { containerPort: p.containerPort, protocol: p.protocol ?? 'TCP' };
      if (p.name) port.name = p.name;
      return port;
    });
  }
  if (c.readinessProbe) out.readinessProbe = { exec: { ...c.readinessProbe.exec, command: [...c.readinessProbe.exec.command] } };
  return out;
}

/** JSON with object keys sorted at every level, so key order never changes the hash. */
export function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
}

/**
 * The revision of a template: the first 10 hex digits of the SHA-256 of its
 * canonical JSON. Independent of key order and of spelled-out defaults.
 */
export function revisionHash(template: PodTemplate): string {
  return createHash('sha256').update(stableJson(canonicalTemplate(template))).digest('hex').slice(0, HASH_LENGTH);
}

export interface TemplateDiff {
  /** The pod can move between the two templates without a new sandbox. */
  inPlacePossible: boolean;
  /** Containers whose image changes (to restart in place), in template order. */
  changedContainers: string[];
  /** What prevents an in-place update, naming the container and field. */
  reason?: string;
}

/**
 * Compare a pod's template with the target one. In place only when both
 * have the same container names in the same order and the containers differ
 * in nothing but `image`; labels and annotations may differ (they need no
 * restart, so `changedContainers` may then be empty).
 */
export function diffTemplates(from: PodTemplate, to: PodTemplate): TemplateDiff {
  const a = canonicalTemplate(from);
  const b = canonicalTemplate(to);
  const namesA = a.containers.map((c) => c.name);
  const namesB = b.containers.map((c) => c.name);

  const added = namesB.filter((n) => !namesA.includes(n));
  const removed = namesA.filter((n) => !namesB.includes(n));
  if (added.length > 0 || removed.length > 0) {
    const parts: string[] = [];
    if (added.length > 0) parts.push(`container${added.length > 1 ? 's' : ''} ${added.map(q).join(', ')} added`);
    if (removed.length > 0) parts.push(`container${removed.length > 1 ? 's' : ''} ${removed.map(q).join(', ')} removed`);
    return { inPlacePossible: false, changedContainers: [], reason: `${parts.join(', ')} (spec.template.spec.containers)` };
  }
  if (namesA.join('\u0000') !== namesB.join('\u0000')) {
    return {
      inPlacePossible: false,
      changedContainers: [],
      reason: `container order changed from ${namesA.map(q).join(', ')} to ${namesB.map(q).join(', ')} (spec.template.spec.containers)`,
    };
  }

  const changedContainers: string[] = [];
  const blockers: string[] = [];
  b.containers.forEach((target, index) => {
    const current = a.containers[index];
    const changed = CONTAINER_FIELDS.filter((field) => stableJson(current[field]) !== stableJson(target[field]));
    if (changed.includes('image')) changedContainers.push(target.name);
    const blocking = changed.filter((field): field is Exclude<ContainerField, 'image'> => field !== 'image');
    if (blocking.length > 0) {
      const fields = blocking.join(', ');
      const paths = blocking.map((field) => `spec.template.spec.containers[${index}].${field}`).join(', ');
      blockers.push(`container ${q(target.name)}: ${fields} changed (${paths})`);
    }
  });
  if (blockers.length > 0) {
    return { inPlacePossible: false, changedContainers, reason: blockers.join('; ') };
  }
  return { inPlacePossible: true, changedContainers };
}

function q(name: string): string {
  return JSON.stringify(name);
}
