/**
 * The upgrade controller as a user runs it, for tests: a private CRI
 * environment (loopback registry, CNI bridge, containerd + CRI), app images
 * pushed to it, and `lazypull controller` in a child process (so a test can
 * kill -9 it and start it again on the same state), with helpers that speak
 * its HTTP API.
 */
import { buildOciLayout, busyboxLayer, type LayerEntry } from './oci-image';

/** Sleeps until SIGTERM, which ends it at once. */
export const SERVE_COMMAND = ['/bin/sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1 & wait $!; done'];
export const SIDECAR_COMMAND = ['/bin/sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1 & wait $!; done # sidecar'];

// The controller's own view types: a test reads exactly what the API serves.
import type { CloneSetStatusView as StatusView, ContainerView, PodView, ReadyEntry } from '../../src/controller/controller';
export type { ContainerView, PodView, ReadyEntry, StatusView };

/** An app image: busybox plus a top layer with /app/version.txt (none when `version` is undefined). */
export async function buildAppImage(dir: string, tag: string, version: string | undefined): Promise<void> {
  const top: LayerEntry[] = [{ type: 'dir', path: 'app', mode: 0o755 }];
  if (version !== undefined) top.push({ type: 'file', path: 'app/version.txt', content: `${version}\n` });
  else top.push({ type: 'file', path: 'app/broken.txt', content: 'no version here\n' });
  await buildOciLayout(dir, { layers: [{ entries: await busyboxLayer() }, { entries: top }], config: { cmd: SERVE_COMMAND }, tag });
}

export interface SetOptions {
  name: string;
  replicas: number;
  image: string;
  sidecarImage: string;
  type?: 'ReCreate' | 'InPlaceIfPossible' | 'InPlaceOnly';
  partition?: number | string;
  maxUnavailable?: number | string;
  gracePeriodSeconds?: number;
  /** Replaces the app's command (a change that needs a new pod). */
  command?: string[];
  paused?: boolean;
  /** updateStrategy.priorityStrategy.orderPriority[0].orderedKey */
  orderedKey?: string;
  /** updateStrategy.priorityStrategy.weightPriority */
  weightPriority?: Array<{ weight: number; matchLabels: Record<string, string> }>;
  /** updateStrategy.scatterStrategy */
  scatter?: Array<{ key: string; value: string }>;
  maxSurge?: number | string;
}

/** A CloneSet manifest: an app container with a readiness probe and a sidecar. */
export function cloneSetYaml(o: SetOptions): string {
  const list = (xs: string[]): string => `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`;
  return [
    'apiVersion: apps.kruise.io/v1alpha1',
    'kind: CloneSet',
    'metadata:',
    `  name: ${o.name}`,
    'spec:',
    `  replicas: ${o.replicas}`,
    '  selector:',
    `    matchLabels: {app: ${o.name}}`,
    '  template:',
    '    metadata:',
    `      labels: {app: ${o.name}}`,
    '    spec:',
    '      containers:',
    '      - name: app',
    `        image: ${o.image}`,
    `        command: ${list(o.command ?? SERVE_COMMAND)}`,
    '        readinessProbe:',
    '          exec: {command: [cat, /app/version.txt]}',
    '          periodSeconds: 1',
    '          failureThreshold: 1',
    '      - name: sidecar',
    `        image: ${o.sidecarImage}`,
    `        command: ${list(SIDECAR_COMMAND)}`,
    '  updateStrategy:',
    `    type: ${o.type ?? 'InPlaceIfPossible'}`,
    `    partition: ${JSON.stringify(o.partition ?? 0)}`,
    `    maxUnavailable: ${JSON.stringify(o.maxUnavailable ?? 1)}`,
    `    maxSurge: ${JSON.stringify(o.maxSurge ?? 0)}`,
    `    paused: ${o.paused === true}`,
    ...(o.orderedKey ? ['    priorityStrategy:', '      orderPriority:', `      - orderedKey: ${o.orderedKey}`] : []),
    ...(o.weightPriority
      ? ['    priorityStrategy:', '      weightPriority:', ...o.weightPriority.map((w) => `      - {weight: ${w.weight}, matchSelector: {matchLabels: ${JSON.stringify(w.matchLabels)}}}`)]
      : []),
    ...(o.scatter ? ['    scatterStrategy:', ...o.scatter.map((t) => `    - {key: ${JSON.stringify(t.key)}, value: ${JSON.stringify(t.value)}}`)] : []),
    '    inPlaceUpdateStrategy:',
    `      gracePeriodSeconds: ${o.gracePeriodSeconds ?? 0}`,
    '',
  ].join('\n');
}

/** One line of the controller's JSON log. */
export { Api, killController, startControllerProcess, type ControllerProcess, type LogEvent } from '../../src/sandbox/local-controller';
