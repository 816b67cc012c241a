/**
 * A private containerd for one test file: its own root, state, sockets and
 * runc root in a temp dir, so tests never touch a system containerd or each
 * other. `stop()` undoes everything (tasks, shims, mounts, runc state, cgroups,
 * temp dir) and is safe to call twice or after a failed start.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface CriOptions {
  /** Snapshotter the CRI plugin uses for images. */
  snapshotter?: string;
  sandboxImage?: string;
  cniConfDir?: string;
  /** containerd `certs.d` directory (hosts.toml per registry). */
  registryConfigPath?: string;
}

export interface ContainerdOptions {
  /** name -> socket of a proxy snapshotter to register. */
  proxySnapshotters?: Record<string, string>;
  /** Enable the CRI plugin (disabled by default). */
  cri?: CriOptions;
  /** Seconds to wait for the socket to answer. */
  startTimeoutSec?: number;
}

export interface CtrOptions {
  namespace?: string;
  /** Fail (reject) on a non-zero exit; default true. */
  check?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface CtrResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Containerd {
  address: string;
  root: string;
  state: string;
  dir: string;
  /** Runc root used by `ctr run` through this fixture (isolated). */
  runcRoot: string;
  /** Default namespace for `ctr` calls: unique per fixture. */
  namespace: string;
  /** Path of containerd's log (stdout+stderr). */
  logPath: string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  stop(): Promise<void>;
}

function tomlString(s: string): string {
  return JSON.stringify(s);
}

function renderConfig(dir: string, opts: ContainerdOptions): string {
  const lines = [
    'version = 2',
    `root = ${tomlString(join(dir, 'root'))}`,
    `state = ${tomlString(join(dir, 'state'))}`,
    '[grpc]',
    `  address = ${tomlString(join(dir, 'containerd.sock'))}`,
    '[ttrpc]',
    `  address = ${tomlString(join(dir, 'containerd.sock.ttrpc'))}`,
    '[debug]',
    '  level = "info"',
  ];
  if (opts.cri === undefined) lines.splice(1, 0, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]');
  lines.push('[proxy_plugins]');
  for (const [name, address] of Object.entries(opts.proxySnapshotters ?? {})) {
    lines.push(`  [proxy_plugins.${name}]`, '    type = "snapshot"', `    address = ${tomlString(address)}`);
  }
  if (opts.cri !== undefined) {
    const cri = opts.cri;
    const p = 'plugins."io.containerd.grpc.v1.cri"';
    lines.push(`[${p}]`);
    if (cri.sandboxImage) lines.push(`  sandbox_image = ${tomlString(cri.sandboxImage)}`);
    lines.push(
      '  disable_apparmor = true',
      '  restrict_oom_score_adj = true',
      '  netns_mounts_under_state_dir = true',
      '  disable_tcp_service = true',
      `  [${p}.cni]`,
      '    bin_dir = "/usr/lib/cni"',
      `    conf_dir = ${tomlString(cri.cniConfDir ?? join(dir, 'cni', 'net.d'))}`,
      '    max_conf_num = 1',
      `  [${p}.containerd]`,
      `    snapshotter = ${tomlString(cri.snapshotter ?? 'overlayfs')}`,
      '    disable_snapshot_annotations = false',
      '    default_runtime_name = "runc"',
      `    [${p}.containerd.runtimes.runc]`,
      '      runtime_type = "io.containerd.runc.v2"',
      `      [${p}.containerd.runtimes.runc.options]`,
      `        Root = ${tomlString(join(dir, 'runc'))}`,
      `  [${p}.registry]`,
      `    config_path = ${tomlString(cri.registryConfigPath ?? join(dir, 'certs.d'))}`,
    );
  }
  return lines.join('\n') + '\n';
}

async function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Mount points at or below `prefix`, deepest first. */
async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === prefix || p.startsWith(prefix + '/')))
    // mountinfo escapes spaces etc. as octal
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Pids of processes whose command line mentions `needle` (our shims). */
async function pidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmdline = await readFile(`/proc/${name}/cmdline`, 'utf8');
      if (cmdline.split('\0').includes(needle)) pids.push(Number(name));
    } catch {
      // process exited meanwhile
    }
  }
  return pids;
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  const dir = await mkdtemp(join(tmpdir(), 'lzp-ctrd-'));
  const address = join(dir, 'containerd.sock');
  const root = join(dir, 'root');
  const state = join(dir, 'state');
  const runcRoot = join(dir, 'runc');
  const namespace = `lzp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const logPath = join(dir, 'containerd.log');
  const configPath = join(dir, 'config.toml');
  await writeFile(configPath, renderConfig(dir, opts));

  const { openSync, closeSync } = await import('node:fs');
  const logFd = openSync(logPath, 'a');
  const child = spawn('containerd', ['--config', configPath], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  child.on('error', () => undefined); // reported through the version probe below
  let stopped = false;

  const ctr = async (args: string[], o: CtrOptions = {}): Promise<CtrResult> => {
    const full = ['-a', address, '-n', o.namespace ?? namespace, ...args];
    try {
      const r = await execFileP('ctr', full, {
        maxBuffer: 64 * 1024 * 1024,
        timeout: o.timeoutMs ?? 120_000,
        env: o.env ?? process.env,
      });
      return { stdout: r.stdout, stderr: r.stderr, code: 0 };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; code?: number | string };
      const result = { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : -1 };
      if (o.check === false) return result;
      throw new Error(`ctr ${args.join(' ')} failed (${String(e.code)}): ${result.stderr.trim() || result.stdout.trim()}`);
    }
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Tasks first, while containerd still answers, so shims exit on their own.
    if (child.exitCode === null) {
      const nss = await ctr(['namespaces', 'list', '-q'], { check: false, timeoutMs: 10_000 });
      for (const ns of nss.stdout.split('\n').filter(Boolean)) {
        const tasks = await ctr(['tasks', 'list', '-q'], { namespace: ns, check: false, timeoutMs: 10_000 });
        for (const id of tasks.stdout.split('\n').filter(Boolean)) {
          await ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { namespace: ns, check: false, timeoutMs: 10_000 });
          await ctr(['tasks', 'delete', '-f', id], { namespace: ns, check: false, timeoutMs: 10_000 });
        }
        const ctrs = await ctr(['containers', 'list', '-q'], { namespace: ns, check: false, timeoutMs: 10_000 });
        for (const id of ctrs.stdout.split('\n').filter(Boolean)) {
          await ctr(['containers', 'delete', id], { namespace: ns, check: false, timeoutMs: 10_000 });
        }
      }
      child.kill('SIGTERM');
      if (!(await waitForExit(child, 10_000))) {
        child.kill('SIGKILL');
        await waitForExit(child, 5_000);
      }
    }
    // Shims that outlived containerd carry our socket path on their command line.
    for (const pid of await pidsMentioning(address)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const point of await mountsUnder(dir)) {
      await execFileP('umount', ['-l', point]).catch(() => undefined);
    }
    // runc keeps per-namespace state outside our dir when ctr was not told --runc-root.
    await rm(join('/run/containerd/runc', namespace), { recursive: true, force: true });
    // runc puts `ctr run` containers in /<namespace>/<id>: under each v1 controller, or once on v2.
    for (const cg of await cgroupDirsFor(namespace)) await removeCgroupTree(cg);
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  };

  const deadline = Date.now() + (opts.startTimeoutSec ?? 20) * 1000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = await readFile(logPath, 'utf8').catch(() => '');
      await stop();
      throw new Error(`containerd exited during start-up:\n${log.slice(-2000)}`);
    }
    const probe = await ctr(['version'], { check: false, timeoutMs: 5_000 });
    if (probe.code === 0) break;
    if (Date.now() > deadline) {
      const log = await readFile(logPath, 'utf8').catch(() => '');
      await stop();
      throw new Error(`containerd did not answer on ${address}:\n${log.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { address, root, state, dir, runcRoot, namespace, logPath, ctr, stop };
}

async function cgroupDirsFor(namespace: string): Promise<string[]> {
  const base = '/sys/fs/cgroup';
  const dirs = [join(base, namespace)];
  for (const controller of await readdir(base).catch(() => [] as string[])) dirs.push(join(base, controller, namespace));
  return dirs;
}

/** Remove an (empty) cgroup directory tree bottom-up; ignore what is busy or gone. */
async function removeCgroupTree(path: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) if (e.isDirectory()) await removeCgroupTree(join(path, e.name));
  await rmdir(path).catch(() => undefined);
}
