/**
 * The upgrade controller as a user runs it, for tests: a private CRI
 * environment (loopback registry, CNI bridge, containerd + CRI), app images
 * pushed to it, and `lazypull controller` in a child process (so a test can
 * kill -9 it and start it again on the same state), with helpers that speak
 * its HTTP API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { CriEnvironment } from '../../src/sandbox/cri-environment';
import { freePort } from '../../src/sandbox/free-port';
import { CLI_PATH } from './cli';
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
export interface LogEvent {
  event?: string;
  cloneset?: string;
  pod?: string;
  revision?: string;
  to?: string;
  [fact: string]: unknown;
}

export interface ControllerProcess {
  url: string;
  child: ChildProcess;
  logPath: string;
  log(): string;
  /** The log's JSON lines, in order (the log is kept across restarts on the same state). */
  events(): LogEvent[];
}

/** Start `lazypull controller` on the environment's CRI socket; resolves once it answers HTTP. */
export async function startControllerProcess(env: CriEnvironment, stateDir: string, port?: number): Promise<ControllerProcess> {
  await mkdir(stateDir, { recursive: true });
  const listenPort = port ?? (await freePort());
  const logPath = join(stateDir, 'controller.log');
  const fd = openSync(logPath, 'a');
  const child = spawn(
    process.execPath,
    [CLI_PATH, 'controller', '--cri', env.endpoint, '--state', stateDir, '--listen', `127.0.0.1:${listenPort}`, '--cgroup-parent', `/${env.cgroupRoot}`, '--log-level', 'debug'],
    { stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  const url = `http://127.0.0.1:${listenPort}`;
  const log = (): string => readFileSync(logPath, 'utf8');
  const events = (): LogEvent[] =>
    log()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l) as LogEvent;
        } catch {
          return {}; // a line cut by kill -9
        }
      });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`controller exited at start:\n${log().slice(-3000)}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`controller did not start:\n${log().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, child, logPath, log, events };
}

export async function killController(c: ControllerProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (c.child.exitCode !== null || c.child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => c.child.once('exit', () => resolve()));
  c.child.kill(signal);
  const timer = setTimeout(() => c.child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
}

/** A client of the controller's HTTP API. */
export class Api {
  constructor(readonly url: string) {}

  async call<T>(method: string, path: string, body?: string): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.url}${path}`, { method, body });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  async apply(yaml: string): Promise<{ name: string; updateRevision: string }> {
    const res = await this.call<{ name: string; updateRevision: string; error?: { message: string } }>('PUT', '/clonesets', yaml);
    if (res.status >= 300) throw new Error(`apply failed (${res.status}): ${JSON.stringify(res.body)}`);
    return res.body;
  }

  async status(name: string): Promise<StatusView> {
    const res = await this.call<{ status: StatusView }>('GET', `/clonesets/${name}`);
    if (res.status !== 200) throw new Error(`GET ${name}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.status;
  }

  async ready(name: string): Promise<ReadyEntry[]> {
    return (await this.call<ReadyEntry[]>('GET', `/clonesets/${name}/ready`)).body;
  }

  async delete(name: string): Promise<void> {
    await this.call('DELETE', `/clonesets/${name}`);
  }

  /** Poll the status until `done` holds; the last status. */
  async waitFor(name: string, what: string, done: (s: StatusView) => boolean, timeoutMs = 60_000): Promise<StatusView> {
    const deadline = Date.now() + timeoutMs;
    let last: StatusView | undefined;
    for (;;) {
      try {
        last = await this.status(name);
        if (done(last)) return last;
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last, null, 1)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** All `replicas` pods at the update revision and ready. */
  rolledOut(name: string, replicas: number, timeoutMs = 60_000): Promise<StatusView> {
    return this.waitFor(
      name,
      `${name} rolled out`,
      (s) => s.replicas === replicas && s.updatedReplicas === replicas && s.updatedReadyReplicas === replicas && s.readyReplicas === replicas && s.pods.every((p) => p.ready),
      timeoutMs,
    );
  }
}
