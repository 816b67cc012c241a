/**
 * `lazypull controller` as a user runs it, in a child process on a CRI
 * socket (so that a test or a benchmark can kill -9 it and start it again
 * on the same state), and a client of its HTTP API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { watchController } from '../cli/controller-http';
import type { CloneSetStatusView as StatusView, ReadyEntry } from '../controller/controller';
import type { CriEnvironment } from './cri-environment';
import { freePort } from './free-port';

/** The CLI entry point (this file runs from dist/src/sandbox). */
const CLI_PATH = join(__dirname, '..', 'cli', 'main.js');

/** One JSON line of the controller's log. */
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

  /** Poll the status every `intervalMs` until `done` holds; the last status. */
  async waitFor(name: string, what: string, done: (s: StatusView) => boolean, timeoutMs = 60_000, intervalMs = 100): Promise<StatusView> {
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
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }

  /**
   * Follow the set's watch stream (what `rollout status --watch` reads) until `done` holds; the status that made
   * it hold. Each change arrives as the controller makes it: no polling grid, and no polls taking CPU from the node.
   */
  watchFor(name: string, what: string, done: (s: StatusView) => boolean, timeoutMs = 60_000): Promise<StatusView> {
    return new Promise((resolve, reject) => {
      let last: StatusView | undefined;
      let settled = false;
      const settle = (err: Error | undefined, status?: StatusView): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        watch.close();
        if (err) reject(err);
        else resolve(status!);
      };
      const watch = watchController(this.url, `/clonesets/${encodeURIComponent(name)}`, (line) => {
        const event = JSON.parse(line) as { type: string; object: { status?: StatusView } };
        if (event.object.status === undefined) return;
        last = event.object.status;
        if (done(last)) settle(undefined, last);
      });
      const timer = setTimeout(() => settle(new Error(`timed out waiting for ${what}: ${JSON.stringify(last, null, 1)}`)), timeoutMs);
      watch.done.then(
        (ended) => settle(new Error(`the watch of ${name} ended before ${what}${ended.streamed ? '' : ` (HTTP ${ended.status}: ${ended.text})`}`)),
        (err: unknown) => settle(err instanceof Error ? err : new Error(String(err))),
      );
    });
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
