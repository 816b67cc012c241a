/**
 * `lazypull rollout …`: the client side of the controller's HTTP API (the
 * `kubectl` of lazypull's CloneSets): apply a manifest, show a set's status
 * as `kubectl get cloneset` does (or its status object as JSON), pause,
 * resume, delete, and label one pod as `kubectl label pod` does. The server
 * is --server, $LAZYPULL_SERVER, or http://127.0.0.1:8450.
 */
import { parseLabelArgs } from '../controller/pod-labels';
import { answerJson, serverUrl } from './controller-answer';
import { callController, watchController, type ControllerWatch } from './controller-http';
import { APPLY_METHOD, APPLY_PATH, appliedOutput, readManifest, type ApplyAnswer } from './rollout-apply-io';

export interface ServerFlags {
  server?: string;
}

interface StatusObject {
  replicas: number;
  readyReplicas: number;
  updatedReplicas: number;
  updatedReadyReplicas: number;
  updateRevision: string;
  message?: string;
}

interface CloneSetView {
  spec: { name: string; replicas: number };
  status: StatusObject;
  createdAt: number;
}

/** One request to the controller; its JSON answer, or a LazypullError carrying the server's message. */
async function request<T>(flags: ServerFlags, method: string, path: string, body?: string, contentType = 'application/yaml'): Promise<T> {
  const { status, text } = await callController(serverUrl(flags.server), method, path, body, contentType);
  return answerJson<T>(method, path, status, text);
}

/** kubectl's HumanDuration: 45s, 3m20s, 17m, 5h3m, 9h, 3d4h, 12d, 2y. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (h < 24 * 8) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

export const STATUS_COLUMNS = ['NAME', 'DESIRED', 'UPDATED', 'UPDATED_READY', 'READY', 'TOTAL', 'AGE'];

export function statusRow(v: CloneSetView, now = Date.now()): string[] {
  return [
    v.spec.name,
    String(v.spec.replicas),
    String(v.status.updatedReplicas),
    String(v.status.updatedReadyReplicas),
    String(v.status.readyReplicas),
    String(v.status.replicas),
    humanDuration(now - v.createdAt),
  ];
}

/** Columns left-aligned, three spaces apart, as kubectl prints them. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] + 3))).join('')).join('\n');
}

/** The thin client (thin-apply-client.ts) runs this command without the CLI when it can: a change here is a change there. */
export async function rolloutApplyCommand(flags: ServerFlags & { file?: string; json?: boolean }): Promise<void> {
  const text = await readManifest(flags.file);
  const answer = await request<ApplyAnswer>(flags, APPLY_METHOD, APPLY_PATH, text);
  process.stdout.write(appliedOutput(answer, flags.json === true));
}

export async function rolloutStatusCommand(name: string, flags: ServerFlags & { watch?: boolean; json?: boolean; interval?: string }): Promise<void> {
  const path = `/clonesets/${encodeURIComponent(name)}`;
  // --json --watch prints one compact object per change; the table prints its header once.
  const show = (v: CloneSetView, header: boolean): string => {
    if (flags.json) return JSON.stringify(v.status, null, flags.watch ? undefined : 2);
    const lines = formatTable([STATUS_COLUMNS, statusRow(v)]).split('\n');
    return (header ? lines : lines.slice(1)).join('\n');
  };
  const first = await request<CloneSetView>(flags, 'GET', path);
  process.stdout.write(`${show(first, true)}\n`);
  if (!flags.json && first.status.message) process.stderr.write(`${first.status.message}\n`);
  if (!flags.watch) return;
  let last = JSON.stringify(flags.json ? first.status : statusRow(first).slice(0, -1));
  let lastMessage = first.status.message;
  const print = (v: CloneSetView): void => {
    const key = JSON.stringify(flags.json ? v.status : statusRow(v).slice(0, -1));
    if (key !== last) {
      process.stdout.write(`${show(v, false)}\n`);
      last = key;
    }
    if (!flags.json && v.status.message !== lastMessage && v.status.message) process.stderr.write(`${v.status.message}\n`);
    lastMessage = v.status.message;
  };
  let stop = false;
  let watch: ControllerWatch | undefined;
  let wake: () => void = () => undefined;
  const onSignal = (): void => {
    stop = true;
    watch?.close();
    wake();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const server = serverUrl(flags.server);
  const interval = Math.max(100, Number(flags.interval ?? 1000) || 1000);
  const pause = (ms: number): Promise<void> =>
    new Promise<void>((r) => {
      const timer = setTimeout(r, ms);
      wake = () => {
        clearTimeout(timer);
        r();
      };
    });
  let streams = true;
  while (!stop) {
    if (streams) {
      const opened = Date.now();
      // Each change as the controller makes it. When the stream ends (the set deleted, the controller restarted),
      // the GET below reports a set that is gone, or an unreachable controller, as the first request would have.
      watch = watchController(server, path, (line) => {
        const event = JSON.parse(line) as { type: string; object: CloneSetView };
        if (event.type !== 'DELETED') print(event.object);
      });
      const ended = await watch.done;
      // A controller without watches: poll it.
      if (!ended.streamed) streams = false;
      // A stream that keeps ending at once (a proxy cutting it) is not reopened in a tight loop.
      else if (Date.now() - opened < interval) await pause(interval);
    } else {
      await pause(interval);
    }
    if (stop) break;
    print(await request<CloneSetView>(flags, 'GET', path));
  }
}

export async function rolloutPauseCommand(name: string, flags: ServerFlags): Promise<void> {
  await request(flags, 'POST', `/clonesets/${encodeURIComponent(name)}/pause`);
  process.stdout.write(`cloneset.apps.kruise.io/${name} paused\n`);
}

export async function rolloutResumeCommand(name: string, flags: ServerFlags): Promise<void> {
  await request(flags, 'POST', `/clonesets/${encodeURIComponent(name)}/resume`);
  process.stdout.write(`cloneset.apps.kruise.io/${name} resumed\n`);
}

export async function rolloutDeleteCommand(name: string, flags: ServerFlags): Promise<void> {
  await request(flags, 'DELETE', `/clonesets/${encodeURIComponent(name)}`);
  process.stdout.write(`cloneset.apps.kruise.io "${name}" deleted\n`);
}

interface LabeledPod {
  name: string;
  labels: Record<string, string>;
  result: string;
  notFound: string[];
}

/** `kubectl label pod POD KEY=VALUE KEY-` for a pod of a CloneSet; the arguments are checked before the controller is asked. */
export async function rolloutLabelCommand(name: string, pod: string, labels: string[], flags: ServerFlags & { overwrite?: boolean; json?: boolean }): Promise<void> {
  const patch = parseLabelArgs(labels);
  const body = JSON.stringify({ labels: patch, overwrite: flags.overwrite === true });
  const path = `/clonesets/${encodeURIComponent(name)}/pods/${encodeURIComponent(pod)}/labels`;
  const done = await request<LabeledPod>(flags, 'PATCH', path, body, 'application/json');
  for (const key of done.notFound) process.stderr.write(`label ${JSON.stringify(key)} not found.\n`);
  if (flags.json) process.stdout.write(`${JSON.stringify(done)}\n`);
  else process.stdout.write(`pod/${done.name} ${done.result}\n`);
}
