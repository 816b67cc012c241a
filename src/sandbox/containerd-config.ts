/**
 * containerd's config.toml for a private instance: every root, state dir and
 * socket inside one dir, proxy snapshotters (the lazypull snapshotter), and
 * the CRI plugin only when asked for (it is disabled otherwise, so a plain
 * instance starts fast and touches no CNI). Facts in shared/runtime-setup.md.
 */
import { join } from 'node:path';

export interface CriOptions {
  /** Snapshotter the CRI plugin uses for images; default overlayfs. */
  snapshotter?: string;
  sandboxImage?: string;
  /** Default DIR/cni/net.d. */
  cniConfDir?: string;
  /** containerd `certs.d` directory (hosts.toml per registry); default DIR/certs.d. */
  registryConfigPath?: string;
}

export interface ContainerdConfigOptions {
  /** name -> socket of a proxy snapshotter to register. */
  proxySnapshotters?: Record<string, string>;
  /** Enable the CRI plugin (disabled by default). */
  cri?: CriOptions;
}

/** Paths of a private instance rooted at `dir`. */
export function containerdPaths(dir: string): { address: string; root: string; state: string; runcRoot: string; config: string; log: string } {
  return {
    address: join(dir, 'containerd.sock'),
    root: join(dir, 'root'),
    state: join(dir, 'state'),
    runcRoot: join(dir, 'runc'),
    config: join(dir, 'config.toml'),
    log: join(dir, 'containerd.log'),
  };
}

/** A JSON string is a valid TOML basic string. */
function tomlString(s: string): string {
  return JSON.stringify(s);
}

export function renderContainerdConfig(dir: string, opts: ContainerdConfigOptions): string {
  const paths = containerdPaths(dir);
  const lines = [
    'version = 2',
    `root = ${tomlString(paths.root)}`,
    `state = ${tomlString(paths.state)}`,
    '[grpc]',
    `  address = ${tomlString(paths.address)}`,
    '[ttrpc]',
    `  address = ${tomlString(`${paths.address}.ttrpc`)}`,
    '[debug]',
    '  level = "info"',
  ];
  if (opts.cri === undefined) lines.splice(1, 0, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]');
  lines.push('[proxy_plugins]');
  for (const [name, address] of Object.entries(opts.proxySnapshotters ?? {})) {
    lines.push(`  [proxy_plugins.${name}]`, '    type = "snapshot"', `    address = ${tomlString(address)}`);
  }
  if (opts.cri !== undefined) lines.push(...criSection(dir, opts.cri));
  return lines.join('\n') + '\n';
}

function criSection(dir: string, cri: CriOptions): string[] {
  const p = 'plugins."io.containerd.grpc.v1.cri"';
  const lines = [`[${p}]`];
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
    // The lazy snapshotter needs the image and layer labels on Prepare.
    '    disable_snapshot_annotations = false',
    '    default_runtime_name = "runc"',
    `    [${p}.containerd.runtimes.runc]`,
    '      runtime_type = "io.containerd.runc.v2"',
    `      [${p}.containerd.runtimes.runc.options]`,
    // runc's state stays in our dir instead of /run/containerd/runc.
    `        Root = ${tomlString(containerdPaths(dir).runcRoot)}`,
    `  [${p}.registry]`,
    `    config_path = ${tomlString(cri.registryConfigPath ?? join(dir, 'certs.d'))}`,
  );
  return lines;
}
