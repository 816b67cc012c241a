/**
 * The in-place upgrade controller's vocabulary, shared by the spec parser,
 * the rollout planner (pure: which pods, in what order, how many at once)
 * and the runtime adapters (CRI today, a Kubernetes API adapter later).
 * Field meanings follow OpenKruise's CloneSet.
 */

export type UpdateStrategyType = 'ReCreate' | 'InPlaceIfPossible' | 'InPlaceOnly';

/** An int or a percentage string ("20%"), as in Kubernetes' IntOrString. */
export type IntOrPercent = number | string;

export interface ExecProbe {
  command: string[];
  initialDelaySeconds: number;
  periodSeconds: number;
  timeoutSeconds: number;
  successThreshold: number;
  failureThreshold: number;
}

export interface ContainerSpec {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value: string }>;
  ports?: Array<{ containerPort: number; protocol?: 'TCP' | 'UDP'; name?: string }>;
  readinessProbe?: { exec: ExecProbe };
}

export interface PodTemplate {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  containers: ContainerSpec[];
}

/** `weightPriority`: pods matching a selector get its weight (higher goes first). */
export interface WeightPriority {
  weight: number;
  matchSelector: { matchLabels: Record<string, string> };
}

/** `orderPriority`: pods ordered by the integer at the end of a label's value (as Kruise sorts: larger first, pods without it before those with it). */
export interface OrderPriority {
  orderedKey: string;
}

export interface PriorityStrategy {
  weightPriority?: WeightPriority[];
  orderPriority?: OrderPriority[];
}

/** Spread updates across pods with these label values (e.g. zone), so no value is updated all at once. */
export type ScatterStrategy = Array<{ key: string; value: string }>;

export interface UpdateStrategy {
  type: UpdateStrategyType;
  /** Pods to keep on the old revision (int or %). */
  partition: IntOrPercent;
  maxUnavailable: IntOrPercent;
  maxSurge: IntOrPercent;
  paused: boolean;
  priorityStrategy?: PriorityStrategy;
  scatterStrategy?: ScatterStrategy;
  inPlaceUpdateStrategy: { gracePeriodSeconds: number };
}

export interface CloneSetSpec {
  name: string;
  replicas: number;
  selector: { matchLabels: Record<string, string> };
  template: PodTemplate;
  updateStrategy: UpdateStrategy;
}

/** The condition an in-place update flips while a pod is being upgraded. */
export const IN_PLACE_UPDATE_READY = 'InPlaceUpdateReady';

export interface ContainerState {
  name: string;
  containerId: string;
  image: string;
  /** Image reference as the runtime reports it (repo digest); changes when the image changes. */
  imageRef: string;
  running: boolean;
  /** Nanoseconds since the epoch, as the CRI reports it. */
  startedAt: number;
  ready: boolean;
  restartCount: number;
}

export interface PodState {
  name: string;
  /** Revision hash of the template the pod runs. */
  revision: string;
  sandboxId: string;
  ip: string;
  labels: Record<string, string>;
  containers: ContainerState[];
  /** Every container running and passing its readiness probe. */
  containersReady: boolean;
  /** The InPlaceUpdateReady readiness gate; false while an in-place update is under way. A runtime without conditions (CRI) reports true and the controller's record decides. */
  inPlaceUpdateReady: boolean;
  /** Being deleted (ReCreate, scale-down, surge clean-up). */
  terminating: boolean;
  createdAt: number;
}

/** Ready = serving: containers ready and the readiness gate open. */
export function podReady(pod: PodState): boolean {
  return pod.containersReady && pod.inPlaceUpdateReady && !pod.terminating;
}

/** What the planner asks the controller to do next. */
export type RolloutAction =
  | { kind: 'create'; revision: string; name: string }
  | { kind: 'delete'; pod: string }
  | { kind: 'updateInPlace'; pod: string; toRevision: string }
  | { kind: 'recreate'; pod: string; toRevision: string };

export interface RolloutStatus {
  replicas: number;
  readyReplicas: number;
  updatedReplicas: number;
  updatedReadyReplicas: number;
  updateRevision: string;
  currentRevision: string;
  /** Why the rollout is not progressing, when it is not. */
  message?: string;
}

/**
 * What an in-place update records on a pod before its containers are
 * replaced (Kruise keeps it in the `apps.kruise.io/inplace-update-state`
 * annotation).
 */
export interface InPlaceUpdateState {
  /** The revision the pod is moved to. */
  revision: string;
  /** Container name → image reference (repo digest) it runs before the update; the new image must report another. */
  recordedImageRefs: Record<string, string>;
  /** When the update began (ms since the epoch). */
  updateTimestamp: number;
}

/**
 * What the controller needs from a node runtime. The CRI adapter talks to
 * containerd's CRI plugin; a Kubernetes adapter would patch Pods instead.
 * The controller keeps its own record of every pod's revision, gate and
 * update state (its store), and tells the runtime each change through the
 * calls below, so that a runtime with a place for them (Pod conditions,
 * labels and annotations) shows them too.
 */
export interface PodRuntime {
  /** Pull images ahead of time (pre-warming). */
  pullImage(image: string): Promise<string>;
  /** A new pod at `revision`, its InPlaceUpdateReady gate open. */
  createPod(name: string, template: PodTemplate, revision: string, labels: Record<string, string>): Promise<PodState>;
  /**
   * Replace only the named containers with the template's, in the same sandbox; the pod then runs `revision`.
   * Resolves once the new containers run; whether they are ready is for a later listing to tell.
   */
  updateContainersInPlace(pod: PodState, template: PodTemplate, changed: string[], revision: string): Promise<void>;
  /**
   * Set the pod's InPlaceUpdateReady readiness-gate condition: false before an
   * in-place update (the pod leaves the load balancers), true once its new
   * containers are verified. Called again after a restart: must be idempotent.
   */
  setInPlaceUpdateReady(pod: PodState, ready: boolean): Promise<void>;
  /** Record on the pod, before its containers are replaced, where the update goes and what it replaces. Idempotent. */
  recordInPlaceUpdateState(pod: PodState, state: InPlaceUpdateState): Promise<void>;
  deletePod(pod: PodState, gracePeriodSeconds: number): Promise<void>;
  /** Current state of every pod of the set, probes evaluated. */
  listPods(selector: Record<string, string>): Promise<PodState[]>;
  /**
   * Pods of an earlier listing with their containers' readiness as the probes
   * say now, without asking the runtime (optional: without it, every
   * reconcile lists).
   */
  readinessNow?(pods: PodState[]): PodState[];
}
