/**
 * PodRuntime over the Kubernetes CRI (containerd's CRI plugin), the calls a
 * kubelet makes. A pod is a CRI pod sandbox (its own network namespace and
 * IP) with one CRI container per template container.
 *
 * Sandboxes carry the set's selector labels plus `lazypull.io/cloneset`,
 * `lazypull.io/pod-name` and `lazypull.io/revision` (the revision it was
 * created at); containers carry `lazypull.io/container` (the template
 * container's name) and `lazypull.io/revision` (the revision they were
 * created for), and their readiness probe as an annotation, so a restarted
 * controller finds everything again from the runtime alone.
 *
 * In-place update of a container: pull the new image first (a failure
 * leaves the pod untouched), create the new container (attempt + 1) next to
 * the running one while the old one stops (short timeout), and start the new
 * one as soon as the old one's processes are gone (stopReplaced). The
 * stopped container is kept (as a kubelet keeps one dead container per name)
 * until the next replacement, so its exit time can be read. Every step is
 * idempotent: called again after a crash, it carries on where it stopped.
 *
 * Sandbox labels are immutable in CRI and there are no pod conditions, so the
 * revision a pod was moved to in place, its InPlaceUpdateReady gate and the
 * recorded image references are kept by the controller (its store, which
 * also serves the ready set); this adapter reports the revision of the newest
 * container and an open gate, and has nothing to write when told of them.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { CriClient, isCriStatus } from '../cri/cri-client';
import type { Container, ContainerConfig, PodSandbox, PodSandboxConfig } from '../cri/cri-types';
import { LazypullError } from '../errors';
import { LABEL_CLONESET, LABEL_POD_NAME, LABEL_REVISION } from './pod-labels';
import { ReadinessTracker, type StartupQuiet } from './readiness';
import { hasExited, processExit, watchableNamespaceInit } from '../util/namespace-init-exit';
import { whenQuiet } from '../util/process-quiet';
import { trace } from '../util/trace';
import type { ContainerSpec, ContainerState, ExecProbe, InPlaceUpdateState, PodRuntime, PodState, PodTemplate } from './types';

export { LABEL_CLONESET, LABEL_POD_NAME, LABEL_REVISION };
export const LABEL_CONTAINER = 'lazypull.io/container';
const ANNOTATION_PROBE = 'lazypull.io/readiness-probe';
const ANNOTATION_LOG_DIR = 'lazypull.io/log-directory';
const ANNOTATION_CGROUP_PARENT = 'lazypull.io/cgroup-parent';
/** How often a starting app's processes are looked at, until they go quiet (a look reads a few /proc files). */
const QUIET_POLL_MS = 4;

export interface CriPodRuntimeOptions {
  /** Namespace in the sandboxes' metadata; default "lazypull". */
  namespace?: string;
  /** Parent of the pods' log directories. */
  logRoot: string;
  /** cgroupfs parent of the pods (each under `<parent>/pod<uid>`); default: the runtime's. */
  cgroupParent?: string;
  /** StopContainer timeout when an old container is replaced in place; default 5 s. */
  stopTimeoutSec?: number;
  /** Called when a container's readiness flips. */
  onReadinessChange?: () => void;
  /**
   * Told of a StopContainer that failed after the container's processes were
   * seen gone (the update went on without waiting for containerd's answer).
   */
  onLateStopFailure?: (containerId: string, err: unknown) => void;
}

/** What ContainerStatus tells of a container that a listing does not. */
interface ContainerFacts {
  image: string;
  /** The repo digest the recorded image references are compared with (ListContainers has the image ID instead). */
  imageRef: string;
  /** ns since the epoch; 0 before it started. */
  startedAt: number;
  /** Its main process as the runtime's verbose status tells it (0: not told). */
  pid: number;
}

/** The main process's pid in the verbose ContainerStatus info (containerd: a JSON string under "info"); 0 if not there. */
function pidOfStatusInfo(info: Record<string, string> | undefined): number {
  try {
    const pid = (JSON.parse(info?.info ?? '{}') as { pid?: unknown }).pid;
    return typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch {
    return 0;
  }
}

/** A pod's containers are ready when its sandbox is, it has containers, and each is ready. */
function containersReadyOf(sandboxReady: boolean, containers: ContainerState[]): boolean {
  return sandboxReady && containers.length > 0 && containers.every((c) => c.ready);
}

/** A CRI call's answer, or undefined when what it asks about is gone (NOT_FOUND). */
async function unlessGone<T>(call: Promise<T>): Promise<T | undefined> {
  try {
    return await call;
  } catch (err) {
    if (isCriStatus(err, 'NOT_FOUND')) return undefined;
    throw err;
  }
}

function attemptOf(c: Container): number {
  return c.metadata?.attempt ?? 0;
}

/** Newest first: by attempt, then by creation time. */
function newestFirst(a: Container, b: Container): number {
  return attemptOf(b) - attemptOf(a) || b.createdAt - a.createdAt;
}

function parseProbe(text: string | undefined): ExecProbe | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as ExecProbe;
  } catch {
    return undefined;
  }
}

export class CriPodRuntime implements PodRuntime {
  readonly cri: CriClient;
  private readonly namespace: string;
  private readonly stopTimeoutSec: number;
  private readonly readiness: ReadinessTracker;
  /** Images known to be on the node (pulled by this process). */
  private readonly present = new Set<string>();
  // What never changes once known, so that a listing of N pods costs ListPodSandbox and ListContainers, not
  // 2 + 2N calls; states and readiness come from each listing. Entries go when a listing no longer shows them.
  /** What CreateContainer needs of a sandbox: its metadata, labels and annotations. */
  private readonly sandboxConfigs = new Map<string, PodSandboxConfig>();
  /** A ready sandbox's IP (its network is set up before RunPodSandbox returns). */
  private readonly sandboxIps = new Map<string, string>();
  /** A started container's image reference, start time and pid. */
  private readonly startedContainers = new Map<string, ContainerFacts>();
  /** Containers a listing showed running with a readiness probe: their readiness is the tracker's (readinessNow). */
  private readonly probedContainers = new Set<string>();
  /** The last listing's containers by sandbox, and when it began (containersOf). */
  private lastListing: { at: number; bySandbox: Map<string, Container[]> } | undefined;
  /** When an in-place update last finished changing a sandbox's containers: a listing begun before may not show it. */
  private readonly sandboxChangedAt = new Map<string, number>();

  constructor(cri: CriClient, private readonly opts: CriPodRuntimeOptions) {
    this.cri = cri;
    this.namespace = opts.namespace ?? 'lazypull';
    this.stopTimeoutSec = opts.stopTimeoutSec ?? 5;
    this.readiness = new ReadinessTracker(async (id, cmd, timeoutSec) => {
      trace('controller.probe');
      return (await cri.execSync(id, cmd, { timeoutSec })).exitCode;
    }, opts.onReadinessChange);
  }

  async pullImage(image: string): Promise<string> {
    const ref = await this.cri.pullImage(image);
    this.present.add(image);
    return ref;
  }

  /** Pull unless this process pulled it already or the node has it. */
  private async ensureImage(image: string): Promise<void> {
    if (this.present.has(image)) return;
    if ((await this.cri.imageStatus(image)) !== undefined) {
      this.present.add(image);
      return;
    }
    await this.pullImage(image);
  }

  private sandboxConfig(name: string, uid: string, labels: Record<string, string>, annotations: Record<string, string>, template: PodTemplate): PodSandboxConfig {
    const logDirectory = annotations[ANNOTATION_LOG_DIR] ?? join(this.opts.logRoot, `${this.namespace}_${name}_${uid}`);
    const cgroupParent = annotations[ANNOTATION_CGROUP_PARENT] ?? (this.opts.cgroupParent ? `${this.opts.cgroupParent.replace(/\/$/, '')}/pod${uid}` : undefined);
    return {
      metadata: { name, uid, namespace: this.namespace, attempt: 0 },
      hostname: name,
      logDirectory,
      labels,
      annotations: {
        ...annotations,
        [ANNOTATION_LOG_DIR]: logDirectory,
        ...(cgroupParent ? { [ANNOTATION_CGROUP_PARENT]: cgroupParent } : {}),
      },
      portMappings: template.containers.flatMap((c) => (c.ports ?? []).map((p) => ({ containerPort: p.containerPort, protocol: p.protocol ?? 'TCP' }))),
      linux: {
        ...(cgroupParent ? { cgroupParent } : {}),
        securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
      },
    };
  }

  /** The config a sandbox was created with, rebuilt from its immutable fields (what CreateContainer needs again). */
  private rememberSandboxConfig(sandbox: Pick<PodSandbox, 'id' | 'metadata' | 'labels' | 'annotations'>): PodSandboxConfig | undefined {
    if (sandbox.metadata === null) return undefined;
    const config = this.sandboxConfig(sandbox.metadata.name, sandbox.metadata.uid, sandbox.labels, sandbox.annotations, { labels: {}, annotations: {}, containers: [] });
    const full = { ...config, metadata: sandbox.metadata, portMappings: undefined };
    this.sandboxConfigs.set(sandbox.id, full);
    return full;
  }

  /** As the last listing showed it (it cannot have changed since), else from the sandbox's status. */
  private async existingSandboxConfig(sandboxId: string): Promise<PodSandboxConfig> {
    const known = this.sandboxConfigs.get(sandboxId);
    if (known !== undefined) return known;
    const status = (await this.cri.podSandboxStatus(sandboxId)).status;
    const config = status === null ? undefined : this.rememberSandboxConfig(status);
    if (config === undefined) {
      throw new LazypullError('LAZYPULL_ERR_CRI', `pod sandbox ${sandboxId} has no status`, { method: 'PodSandboxStatus', podSandboxId: sandboxId });
    }
    return config;
  }

  private containerConfig(spec: ContainerSpec, pod: string, set: string, revision: string, attempt: number): ContainerConfig {
    return {
      metadata: { name: spec.name, attempt },
      image: { image: spec.image },
      ...(spec.command?.length ? { command: spec.command } : {}),
      ...(spec.args?.length ? { args: spec.args } : {}),
      envs: (spec.env ?? []).map((e) => ({ key: e.name, value: e.value })),
      labels: { [LABEL_CLONESET]: set, [LABEL_POD_NAME]: pod, [LABEL_REVISION]: revision, [LABEL_CONTAINER]: spec.name },
      annotations: spec.readinessProbe ? { [ANNOTATION_PROBE]: JSON.stringify(spec.readinessProbe.exec) } : {},
      logPath: `${spec.name}/${attempt}.log`,
      // A kubelet's default (no shareProcessNamespace): the container's own PID namespace, the pod's network and IPC.
      // Its main process is then PID 1 there, and the whole container is gone once that process is (stopReplaced).
      linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
    };
  }

  async createPod(name: string, template: PodTemplate, revision: string, labels: Record<string, string>): Promise<PodState> {
    for (const c of template.containers) await this.ensureImage(c.image);
    const set = labels[LABEL_CLONESET] ?? '';
    const uid = randomUUID();
    const config = this.sandboxConfig(name, uid, { ...labels, [LABEL_POD_NAME]: name, [LABEL_REVISION]: revision }, { ...template.annotations }, template);
    const sandboxId = await this.cri.runPodSandbox(config);
    try {
      for (const spec of template.containers) {
        const id = await this.cri.createContainer(sandboxId, this.containerConfig(spec, name, set, revision, 0), config);
        await this.cri.startContainer(id);
      }
    } catch (err) {
      await this.removeSandbox(sandboxId, 0).catch(() => undefined);
      throw err;
    }
    return this.requirePod(sandboxId);
  }

  async updateContainersInPlace(pod: PodState, template: PodTemplate, changed: string[], revision: string): Promise<void> {
    const specs = changed.map((name) => {
      const spec = template.containers.find((c) => c.name === name);
      if (spec === undefined) {
        throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `container ${name} is not in the template of revision ${revision}`, { pod: pod.name, container: name });
      }
      return spec;
    });
    // Every new image on the node before anything is stopped: a failed pull leaves the pod as it was.
    for (const spec of specs) await this.ensureImage(spec.image);
    const sandboxConfig = await this.existingSandboxConfig(pod.sandboxId);
    const set = sandboxConfig.labels?.[LABEL_CLONESET] ?? '';
    try {
      await this.replaceContainers(pod, specs, revision, sandboxConfig, set);
    } finally {
      this.sandboxChangedAt.set(pod.sandboxId, Date.now());
    }
  }

  private async replaceContainers(pod: PodState, specs: ContainerSpec[], revision: string, sandboxConfig: PodSandboxConfig, set: string): Promise<void> {
    const all = await this.containersOf(pod.sandboxId);
    for (const spec of specs) {
      const mine = all.filter((c) => c.labels[LABEL_CONTAINER] === spec.name).sort(newestFirst);
      const newest = mine[0];
      // Created before a crash: carry on with it.
      const resumed = newest !== undefined && newest.labels[LABEL_REVISION] === revision && newest.image?.image === spec.image ? newest : undefined;
      const previous = mine.filter((c) => c !== resumed);
      // The new container is created while the old one stops (its pod's gate is closed, so nobody is sent to it):
      // a kubelet even stops it before it pulls. A create that fails leaves the pod without its container, as a new
      // container that never becomes ready does: counted unavailable, and the rollout stops there.
      const creating: Promise<{ id: string; state: string }> =
        resumed !== undefined
          ? Promise.resolve(resumed)
          : this.cri
              .createContainer(pod.sandboxId, this.containerConfig(spec, pod.name, set, revision, newest === undefined ? 1 : attemptOf(newest) + 1), sandboxConfig)
              .then((id) => ({ id, state: 'CONTAINER_CREATED' }));
      const stops = previous.map((old) => this.stopReplaced(old));
      const stopped = Promise.all(stops.map((s) => s.stopped));
      stopped.catch(() => undefined); // reported through `gone` or onLateStopFailure
      const [created, gone] = await Promise.allSettled([creating, Promise.all(stops.map((s) => s.gone))]);
      if (gone.status === 'rejected') throw gone.reason;
      if (created.status === 'rejected') {
        // The caller looks at the pod to tell whether it was touched: not while a stop is under way.
        await Promise.allSettled([stopped]);
        throw created.reason;
      }
      const target = created.value;
      if (target.state === 'CONTAINER_CREATED') {
        await this.cri.startContainer(target.id);
        // Probed from its start rather than from the next listing, first when its app goes quiet; the verdict
        // comes through onReadinessChange.
        if (spec.readinessProbe) void this.readiness.track(target.id, spec.readinessProbe.exec, Date.now(), this.startupQuiet(target.id));
      }
      // The old processes are gone. containerd's end of the stop (60-120 ms of bookkeeping on a busy node) goes on
      // without holding up the update: the pod is verified by its new containers; the old ones show as exited later.
      // Keep the most recent dead one (as a kubelet does, for its logs), remove the older: after the start, off its path.
      for (const old of previous.slice(1)) {
        await this.cri.removeContainer(old.id).catch((err: unknown) => {
          if (!isCriStatus(err, 'NOT_FOUND')) throw err;
        });
      }
    }
  }

  /**
   * When a container just started has gone quiet (util/process-quiet.ts),
   * for timing its first probes. Its main process comes from the verbose
   * status, asked once (a listing would ask for it anyway).
   */
  private startupQuiet(containerId: string): StartupQuiet {
    const watched = this.containerFacts(containerId).then(
      (facts) => (facts?.pid ? watchableNamespaceInit(facts.pid, containerId) : undefined),
      () => undefined,
    );
    return async (maxWaitMs) => {
      const main = await watched;
      return main === undefined ? 'unknown' : whenQuiet(main, { pollMs: QUIET_POLL_MS, maxWaitMs });
    };
  }

  /**
   * A sandbox's containers, from the last listing if nothing changed them
   * since it began (the controller plans an update on that listing, and only
   * an update changes a pod's set of containers), else asked for: on an
   * update's critical path a listing costs 5-15 ms of a busy containerd.
   * States may be older than the listing's: stopping a container that has
   * exited meanwhile is harmless.
   */
  private async containersOf(sandboxId: string): Promise<Container[]> {
    const listing = this.lastListing;
    const listed = listing?.bySandbox.get(sandboxId);
    if (listing !== undefined && listed !== undefined && listing.at > (this.sandboxChangedAt.get(sandboxId) ?? 0)) return listed;
    return this.cri.listContainers({ podSandboxId: sandboxId });
  }

  /**
   * Stop a container being replaced; gone already is fine. `stopped` is the
   * runtime's answer. `gone` resolves as soon as nothing of the container
   * runs: when its main process, watched through /proc, has exited (see
   * namespace-init-exit.ts), which on a busy node is 60-120 ms before
   * containerd answers; otherwise with `stopped`.
   */
  private stopReplaced(old: Container): { stopped: Promise<void>; gone: Promise<void> } {
    // Its pod's gate is closed: a probe now would only race the stop (and cost an exec).
    this.readiness.retire(old.id);
    if (old.state !== 'CONTAINER_RUNNING' && old.state !== 'CONTAINER_CREATED' && old.state !== 'CONTAINER_UNKNOWN') {
      return { stopped: Promise.resolve(), gone: Promise.resolve() };
    }
    const pid = this.startedContainers.get(old.id)?.pid ?? 0;
    // Identified before the stop signal: afterwards its pid may be gone, or another process's.
    const watched = old.state === 'CONTAINER_RUNNING' ? watchableNamespaceInit(pid, old.id) : undefined;
    const stopped = this.cri.stopContainer(old.id, this.stopTimeoutSec).catch((err: unknown) => {
      if (isCriStatus(err, 'NOT_FOUND')) return;
      this.readiness.reinstate(old.id);
      throw err;
    });
    if (watched === undefined) return { stopped, gone: stopped };
    // If the stop fails while the process still runs, that failure is the answer; after it, the failure is reported.
    const gone = processExit(watched, stopped).then(() => (hasExited(watched) ? undefined : stopped));
    void gone.then(
      () => stopped.catch((err: unknown) => this.opts.onLateStopFailure?.(old.id, err)),
      () => undefined,
    );
    return { stopped, gone };
  }

  /** No pod conditions in CRI: the controller's record is the gate. */
  async setInPlaceUpdateReady(_pod: PodState, _ready: boolean): Promise<void> {}

  /** Sandbox labels and annotations are immutable in CRI: the controller's record keeps the state; the new containers carry the revision label. */
  async recordInPlaceUpdateState(_pod: PodState, _state: InPlaceUpdateState): Promise<void> {}

  private async removeSandbox(sandboxId: string, gracePeriodSeconds: number): Promise<void> {
    const containers = await this.cri.listContainers({ podSandboxId: sandboxId }).catch(() => [] as Container[]);
    for (const c of containers) this.readiness.forget(c.id);
    await Promise.all(
      containers
        .filter((c) => c.state === 'CONTAINER_RUNNING')
        .map((c) => this.cri.stopContainer(c.id, Math.max(0, Math.round(gracePeriodSeconds))).catch(() => undefined)),
    );
    for (const step of [() => this.cri.stopPodSandbox(sandboxId), () => this.cri.removePodSandbox(sandboxId)]) {
      await step().catch((err: unknown) => {
        if (!isCriStatus(err, 'NOT_FOUND')) throw err;
      });
    }
    this.sandboxConfigs.delete(sandboxId);
    this.sandboxIps.delete(sandboxId);
  }

  async deletePod(pod: PodState, gracePeriodSeconds: number): Promise<void> {
    await this.removeSandbox(pod.sandboxId, gracePeriodSeconds);
  }

  private async requirePod(sandboxId: string): Promise<PodState> {
    const [pod] = await this.podsOf(await this.cri.listPodSandbox({ id: sandboxId }));
    if (pod === undefined) throw new LazypullError('LAZYPULL_ERR_CRI', `pod sandbox ${sandboxId} vanished`, { method: 'ListPodSandbox', podSandboxId: sandboxId });
    return pod;
  }

  async listPods(selector: Record<string, string>): Promise<PodState[]> {
    trace('controller.list');
    // Every sandbox, selected here as CRI's label selector would: the whole list also tells which remembered ones are gone.
    const all = await this.cri.listPodSandbox();
    const ids = new Set(all.map((s) => s.id));
    for (const known of [this.sandboxConfigs, this.sandboxIps, this.sandboxChangedAt]) for (const id of known.keys()) if (!ids.has(id)) known.delete(id);
    const selected = all.filter((s) => Object.entries(selector).every(([k, v]) => s.labels[k] === v));
    for (const s of selected) if (!this.sandboxConfigs.has(s.id)) this.rememberSandboxConfig(s);
    return this.podsOf(selected);
  }

  private async podsOf(sandboxes: PodSandbox[]): Promise<PodState[]> {
    const listedAt = Date.now();
    const containers = await this.cri.listContainers();
    const bySandbox = new Map<string, Container[]>();
    for (const c of containers) {
      const list = bySandbox.get(c.podSandboxId);
      if (list === undefined) bySandbox.set(c.podSandboxId, [c]);
      else list.push(c);
    }
    if (this.lastListing === undefined || listedAt >= this.lastListing.at) this.lastListing = { at: listedAt, bySandbox };
    const ids = new Set(containers.map((c) => c.id));
    for (const id of this.startedContainers.keys()) if (!ids.has(id)) this.startedContainers.delete(id);
    for (const id of this.probedContainers) if (!ids.has(id)) this.probedContainers.delete(id);
    // A container started while this listing was under way is probed already (updateContainersInPlace): not stopped here.
    this.readiness.retain(new Set(containers.filter((c) => c.state === 'CONTAINER_RUNNING').map((c) => c.id)), listedAt);
    const pods: PodState[] = [];
    await Promise.all(
      sandboxes.map(async (sandbox) => {
        const ip = await this.sandboxIp(sandbox.id);
        if (ip === undefined) return; // removed meanwhile
        const mine = containers.filter((c) => c.podSandboxId === sandbox.id);
        pods.push(await this.podState(sandbox, ip, mine));
      }),
    );
    return pods.sort((a, b) => a.name.localeCompare(b.name) || a.createdAt - b.createdAt);
  }

  /** The sandbox's IP; undefined once it is gone. */
  private async sandboxIp(sandboxId: string): Promise<string | undefined> {
    const known = this.sandboxIps.get(sandboxId);
    if (known !== undefined) return known;
    const status = (await unlessGone(this.cri.podSandboxStatus(sandboxId)))?.status;
    if (!status) return undefined;
    const ip = status.network?.ip ?? '';
    if (status.state === 'SANDBOX_READY') this.sandboxIps.set(sandboxId, ip);
    return ip;
  }

  /** A container's image reference and start time (0 before it started); undefined once it is gone. */
  private async containerFacts(containerId: string): Promise<ContainerFacts | undefined> {
    const known = this.startedContainers.get(containerId);
    if (known !== undefined) return known;
    // Verbose for the pid, which an in-place update watches (stopReplaced); asked once per started container.
    const answer = await unlessGone(this.cri.containerStatus(containerId, { verbose: true }));
    const status = answer?.status;
    if (!status) return undefined;
    const facts: ContainerFacts = { image: status.image?.image ?? '', imageRef: status.imageRef, startedAt: status.startedAt, pid: pidOfStatusInfo(answer?.info) };
    if (status.startedAt > 0) this.startedContainers.set(containerId, facts);
    return facts;
  }

  private async podState(sandbox: PodSandbox, ip: string, containers: Container[]): Promise<PodState> {
    const byName = new Map<string, Container[]>();
    for (const c of containers) {
      const name = c.labels[LABEL_CONTAINER] ?? c.metadata?.name ?? '';
      byName.set(name, [...(byName.get(name) ?? []), c]);
    }
    const states: ContainerState[] = [];
    let newestRevision: { revision: string; createdAt: number } | undefined;
    for (const [name, list] of byName) {
      list.sort(newestFirst);
      const current = list[0];
      const facts = await this.containerFacts(current.id);
      const running = facts !== undefined && current.state === 'CONTAINER_RUNNING';
      const probe = parseProbe(current.annotations[ANNOTATION_PROBE]);
      let ready = running;
      if (running && probe !== undefined) {
        this.probedContainers.add(current.id);
        ready = await this.readiness.observe(current.id, probe, facts?.startedAt ?? 0);
      }
      states.push({
        name,
        containerId: current.id,
        image: current.image?.image ?? facts?.image ?? '',
        imageRef: facts?.imageRef ?? '',
        running,
        startedAt: facts?.startedAt ?? 0,
        ready,
        restartCount: attemptOf(current),
      });
      const revision = current.labels[LABEL_REVISION];
      if (revision && (newestRevision === undefined || current.createdAt > newestRevision.createdAt)) newestRevision = { revision, createdAt: current.createdAt };
    }
    states.sort((a, b) => a.name.localeCompare(b.name));
    const sandboxReady = sandbox.state === 'SANDBOX_READY';
    return {
      name: sandbox.labels[LABEL_POD_NAME] ?? sandbox.metadata?.name ?? sandbox.id,
      revision: newestRevision?.revision ?? sandbox.labels[LABEL_REVISION] ?? '',
      sandboxId: sandbox.id,
      ip,
      labels: sandbox.labels,
      containers: states,
      containersReady: containersReadyOf(sandboxReady, states),
      inPlaceUpdateReady: true,
      // A sandbox that is not ready any more (stopped, network gone) is on its way out.
      terminating: !sandboxReady,
      createdAt: sandbox.createdAt,
    };
  }

  readinessNow(pods: PodState[]): PodState[] {
    return pods.map((pod) => {
      const containers = pod.containers.map((c) => (c.running && this.probedContainers.has(c.containerId) ? { ...c, ready: this.readiness.current(c.containerId) } : c));
      // podState reports a sandbox that is not ready as terminating.
      return { ...pod, containers, containersReady: containersReadyOf(!pod.terminating, containers) };
    });
  }

  close(): void {
    this.readiness.close();
  }
}

