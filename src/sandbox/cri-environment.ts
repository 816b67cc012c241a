/**
 * A private Kubernetes node runtime for tests, benchmarks, the demo and the
 * upgrade controller: a loopback registry holding a pause image, a CNI bridge
 * network, and containerd with its CRI plugin, all under one temp dir, with
 * a CRI client connected and the runtime ready (RuntimeReady, NetworkReady).
 * The CRI snapshotter is overlayfs unless told otherwise (e.g. "lazypull"
 * with a proxy snapshotter socket).
 *
 * `stop()` removes pods and containers through CRI first (so CNI DEL
 * releases addresses and veths), then stops containerd and the registry,
 * and deletes the bridge, the network namespaces, go-cni's cache entries,
 * the pods' cgroups and the dir. It runs on a failed start too, is safe to
 * call twice, and an exit hook does the synchronous part if the process ends
 * first. Facts in shared/runtime-setup.md.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CriClient } from '../cri/cri-client';
import type { ContainerConfig, PodSandboxConfig } from '../cri/cri-types';
import { LazypullError, toError } from '../errors';
import { createCniNetwork, type CniNetwork, type CniNetworkOptions } from './cni-network';
import { pushPauseImage } from './cri-pause-image';
import { cleanupOnExit } from './exit-cleanup';
import { startContainerd, type Containerd } from './local-containerd';
import { startLocalRegistry, type LocalRegistry } from './local-registry';
import { requireBinary, requireRoot } from './prerequisites';
import { mountsUnder, sweepCgroups } from './runtime-leftovers';

const execFileP = promisify(execFile);

/** Kubernetes namespace our pod configs carry in their metadata. */
export const CRI_POD_NAMESPACE = 'lazypull';

export interface CriEnvironmentOptions {
  /** Snapshotter of the CRI plugin; default "overlayfs". */
  snapshotter?: string;
  /** name -> socket of proxy snapshotters to register in containerd. */
  proxySnapshotters?: Record<string, string>;
  /** Use this registry (plain HTTP on loopback) instead of starting one; stop() leaves it running. */
  registry?: LocalRegistry;
  /**
   * Runs after the registry, pause image, network and hosts dir exist and
   * before containerd starts: the place to start a proxy snapshotter that
   * needs the registry. Returned proxy snapshotters are added to containerd's.
   */
  beforeContainerd?: (ctx: CriEnvironmentContext) => Promise<{ proxySnapshotters?: Record<string, string> } | void>;
  /** CNI: subnet (default a free 10.X.Y.0/24) and host access to pods (default on). */
  network?: CniNetworkOptions;
  /** Pull the pause image during start, so the first RunPodSandbox measures the sandbox only; default true. */
  prePullPauseImage?: boolean;
  /** Where the private dir is created; default the system temp dir. */
  parentDir?: string;
  /** Leave the private dir in place on stop() (daemons, bridge and cgroups still go). */
  keepDir?: boolean;
  /** Seconds for containerd to answer and CRI to become ready; default 30. */
  startTimeoutSec?: number;
}

/** What exists when `beforeContainerd` runs. */
export interface CriEnvironmentContext {
  dir: string;
  registry: LocalRegistry;
  /** containerd `certs.d`-style dir with a hosts.toml for the registry (plain HTTP). */
  hostsDir: string;
  network: CniNetwork;
  pauseImage: string;
}

export interface PodConfigOptions {
  /** Pod UID; default a random UUID (a recreated pod gets a new one). */
  uid?: string;
  attempt?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  hostname?: string;
}

export interface CriEnvironment extends CriEnvironmentContext {
  /** `unix:///…/containerd.sock`, the CRI endpoint. */
  endpoint: string;
  containerd: Containerd;
  /** Connected and ready; closed by stop(). */
  cri: CriClient;
  /** The CRI snapshotter in use. */
  snapshotter: string;
  /** Parent dir of the pods' log directories. */
  logRoot: string;
  /** cgroup name under which the pods of `podConfig` live (/sys/fs/cgroup/<controller>/<name>). */
  cgroupRoot: string;
  /**
   * A PodSandboxConfig for this node: metadata in namespace "lazypull", log
   * directory under logRoot, cgroup parent under cgroupRoot (so stop() finds
   * the cgroups), pod network namespace, own PID namespace per container.
   */
  podConfig(name: string, opts?: PodConfigOptions): PodSandboxConfig;
  /** Log path (relative to the pod's log directory) for a container: "<name>/<attempt>.log". */
  containerLogPath(config: Pick<ContainerConfig, 'metadata'>): string;
  /** Push an OCI layout's tag to the registry with skopeo; the reference "HOST/REPOSITORY:TAG". */
  pushOciLayout(layoutDir: string, tag: string, repository: string, destTag?: string): Promise<string>;
  stop(): Promise<void>;
}

/** hosts.toml so containerd's CRI pulls from the loopback registry over plain HTTP. */
function writeHostsToml(hostsDir: string, registryHost: string): void {
  const dir = join(hostsDir, registryHost);
  mkdirSync(dir, { recursive: true });
  const url = `http://${registryHost}`;
  writeFileSync(join(dir, 'hosts.toml'), [`server = ${JSON.stringify(url)}`, '', `[host.${JSON.stringify(url)}]`, '  capabilities = ["pull", "resolve"]', ''].join('\n'));
}

const CGROUP_ROOT = '/sys/fs/cgroup';
/** containerd's CRI namespace: runc puts pods without a cgroup parent under /k8s.io/<id>. */
const CRI_CGROUP_PARENT = 'k8s.io';

function criCgroupParentExists(): boolean {
  try {
    return readdirSync(CGROUP_ROOT).some((c) => existsSync(join(CGROUP_ROOT, c, CRI_CGROUP_PARENT))) || existsSync(join(CGROUP_ROOT, CRI_CGROUP_PARENT, 'cgroup.procs'));
  } catch {
    return false;
  }
}

/**
 * Cgroups of pods created without our cgroup parent (a caller's own config):
 * /k8s.io/<id> per id, and /k8s.io itself when this run created it and it is
 * empty (rmdir refuses a non-empty cgroup, so another user's stays).
 */
function sweepCriCgroups(ids: Iterable<string>, removeParent: boolean): void {
  for (const id of ids) sweepCgroups(join(CRI_CGROUP_PARENT, id));
  if (!removeParent) return;
  const dirs = [join(CGROUP_ROOT, CRI_CGROUP_PARENT)];
  try {
    for (const c of readdirSync(CGROUP_ROOT)) dirs.push(join(CGROUP_ROOT, c, CRI_CGROUP_PARENT));
  } catch {
    // no cgroup fs
  }
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch {
      // absent, not a cgroup, or in use
    }
  }
}

/** Stop and remove every sandbox (and so every container) CRI knows of; best effort. Adds the ids it saw to `seen`. */
async function removeAllPods(cri: CriClient, seen: Set<string>): Promise<string[]> {
  const problems: string[] = [];
  const quick = { timeoutMs: 15_000 };
  let sandboxes: string[] = [];
  try {
    sandboxes = (await cri.listPodSandbox(undefined, quick)).map((s) => s.id);
    for (const c of await cri.listContainers(undefined, quick)) seen.add(c.id);
  } catch (err) {
    problems.push(toError(err).message);
  }
  sandboxes.forEach((id) => seen.add(id));
  for (const id of sandboxes) {
    try {
      await cri.stopPodSandbox(id, quick);
      await cri.removePodSandbox(id, quick);
    } catch (err) {
      problems.push(toError(err).message);
    }
  }
  // Containers whose sandbox is gone would be odd, but leave nothing behind.
  try {
    for (const c of await cri.listContainers(undefined, quick)) await cri.removeContainer(c.id, quick).catch((err: unknown) => problems.push(toError(err).message));
  } catch (err) {
    problems.push(toError(err).message);
  }
  return problems;
}

interface HostSweep {
  dir: string;
  keepDir: boolean;
  cgroupRoot: string;
  network?: CniNetwork;
  /** containerd's state dir, once started: its task dirs name every sandbox and container. */
  containerdState?: string;
  /** Sandbox and container ids seen through CRI. */
  criIds: Set<string>;
  /** /k8s.io did not exist before this run. */
  removeCriParent: boolean;
}

/** Ids of the CRI tasks containerd has state for (k8s.io namespace). */
function taskIds(containerdState: string | undefined): string[] {
  if (containerdState === undefined) return [];
  try {
    return readdirSync(join(containerdState, 'io.containerd.runtime.v2.task', CRI_CGROUP_PARENT));
  } catch {
    return [];
  }
}

/** The synchronous part of teardown: mounts under the dir, cgroups, network, the dir. */
function sweepHost(h: HostSweep): void {
  const ids = new Set([...h.criIds, ...taskIds(h.containerdState)]);
  for (const point of mountsUnder(h.dir)) {
    try {
      execFileSync('umount', ['-l', point], { stdio: 'ignore' });
    } catch {
      // not mounted any more
    }
  }
  sweepCgroups(h.cgroupRoot);
  sweepCriCgroups(ids, h.removeCriParent);
  h.network?.remove(ids);
  if (!h.keepDir) rmSync(h.dir, { recursive: true, force: true, maxRetries: 3 });
}

export async function startCriEnvironment(opts: CriEnvironmentOptions = {}): Promise<CriEnvironment> {
  requireRoot('a CRI environment');
  requireBinary('containerd', 'containerd');
  requireBinary('runc', 'runc');
  const dir = await mkdtemp(join(opts.parentDir ?? tmpdir(), 'lzp-cri-'));
  const keepDir = opts.keepDir === true;
  const cgroupRoot = `lazypull-cri-${randomBytes(4).toString('hex')}`;
  const logRoot = join(dir, 'pods');
  const hostsDir = join(dir, 'certs.d');
  mkdirSync(logRoot, { recursive: true });
  const snapshotter = opts.snapshotter ?? 'overlayfs';

  let registry: LocalRegistry | undefined;
  let containerd: Containerd | undefined;
  let cri: CriClient | undefined;
  const sweep: HostSweep = { dir, keepDir, cgroupRoot, criIds: new Set(), removeCriParent: !criCgroupParentExists() };
  // Registered again once containerd runs, so that at exit containerd's own hook (kill it and its shims) comes first.
  let unregister = cleanupOnExit(() => sweepHost(sweep));

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const problems: string[] = [];
      if (cri !== undefined && containerd !== undefined) problems.push(...(await removeAllPods(cri, sweep.criIds)));
      cri?.close();
      for (const id of taskIds(sweep.containerdState)) sweep.criIds.add(id);
      await containerd?.stop().catch((err: unknown) => problems.push(toError(err).message));
      if (opts.registry === undefined) await registry?.stop().catch((err: unknown) => problems.push(toError(err).message));
      sweepHost(sweep);
      unregister();
      if (problems.length > 0 && process.env.LAZYPULL_DEBUG !== undefined) {
        process.stderr.write(`lazypull:cri-environment teardown notes: ${problems.join('; ')}\n`);
      }
    })());

  try {
    registry = opts.registry ?? (await startLocalRegistry({ parentDir: dir }));
    writeHostsToml(hostsDir, registry.host);
    const pauseImage = await pushPauseImage(registry.host, join(dir, 'no-docker-config.json'));
    const network = createCniNetwork(dir, opts.network);
    sweep.network = network;
    const context: CriEnvironmentContext = { dir, registry, hostsDir, network, pauseImage };
    const extra = (await opts.beforeContainerd?.(context)) ?? {};
    containerd = await startContainerd({
      parentDir: dir,
      keepDir: true, // the whole dir goes in sweepHost
      startTimeoutSec: opts.startTimeoutSec ?? 30,
      proxySnapshotters: { ...opts.proxySnapshotters, ...extra.proxySnapshotters },
      cri: { snapshotter, sandboxImage: pauseImage, cniConfDir: network.confDir, registryConfigPath: hostsDir },
    });
    sweep.containerdState = containerd.state;
    unregister();
    unregister = cleanupOnExit(() => sweepHost(sweep));
    const endpoint = `unix://${containerd.address}`;
    cri = new CriClient(endpoint);
    await cri.waitUntilReady((opts.startTimeoutSec ?? 30) * 1000);
    if (opts.prePullPauseImage !== false) await cri.pullImage(pauseImage);

    const podConfig = (name: string, o: PodConfigOptions = {}): PodSandboxConfig => {
      const uid = o.uid ?? randomUUID();
      const attempt = o.attempt ?? 0;
      return {
        metadata: { name, uid, namespace: CRI_POD_NAMESPACE, attempt },
        hostname: o.hostname ?? name,
        logDirectory: join(logRoot, `${CRI_POD_NAMESPACE}_${name}_${uid}`),
        labels: o.labels ?? {},
        annotations: o.annotations ?? {},
        linux: {
          cgroupParent: `/${cgroupRoot}/pod${uid}`,
          securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
        },
      };
    };
    const pushOciLayout = async (layoutDir: string, tag: string, repository: string, destTag = tag): Promise<string> => {
      const skopeo = requireBinary('skopeo', 'skopeo');
      const ref = `${context.registry.host}/${repository}:${destTag}`;
      try {
        await execFileP(skopeo, ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layoutDir}:${tag}`, `docker://${ref}`], { timeout: 300_000 });
      } catch (err) {
        const stderr = String((err as { stderr?: string }).stderr ?? '').trim();
        throw new LazypullError('LAZYPULL_ERR_SANDBOX', `skopeo copy oci:${layoutDir}:${tag} -> ${ref} failed: ${stderr || toError(err).message}`, {
          command: 'skopeo copy',
          reference: ref,
        });
      }
      return ref;
    };
    return {
      ...context,
      endpoint,
      containerd,
      cri,
      snapshotter,
      logRoot,
      cgroupRoot,
      podConfig,
      containerLogPath: (c) => `${c.metadata.name}/${c.metadata.attempt ?? 0}.log`,
      pushOciLayout,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
