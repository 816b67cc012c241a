/**
 * Registry hosts in containerd's `hosts.toml` format (the CRI plugin's
 * `config_path`): `<dir>/<registry>/hosts.toml`, falling back to
 * `<dir>/_default/hosts.toml`. Each file may name mirrors (`[host."URL"]`,
 * tried in the order written) and the origin (`server = "URL"`, which also
 * says whether it speaks plain HTTP). Not supported yet: per-host
 * `header`, `ca`, `client` and `skip_verify` settings.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { LazypullError } from '../errors';
import { DOCKER_HUB_REGISTRY } from './reference';

export type HostCapability = 'pull' | 'resolve' | 'push';

export interface RegistryEndpoint {
  /** "host[:port]" to send requests to. */
  host: string;
  plainHttp: boolean;
  capabilities: HostCapability[];
  /** True for the registry itself, false for a mirror. */
  origin: boolean;
}

const ALL_CAPABILITIES: HostCapability[] = ['pull', 'resolve', 'push'];

function endpointFrom(urlText: string, file: string, origin: boolean, table: Record<string, unknown> = {}): RegistryEndpoint {
  let url: URL;
  try {
    url = new URL(urlText.includes('://') ? urlText : `https://${urlText}`);
  } catch {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${file}: "${urlText}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${file}: "${urlText}" must be http or https`);
  }
  if (url.pathname !== '/' && url.pathname !== '' && url.pathname !== '/v2' && url.pathname !== '/v2/') {
    // Path prefixes (override_path) are rare for mirrors; refuse rather than silently ignore.
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${file}: mirror paths are not supported ("${urlText}")`);
  }
  const caps = Array.isArray(table.capabilities) ? (table.capabilities as unknown[]).filter((c): c is HostCapability => ALL_CAPABILITIES.includes(c as HostCapability)) : ALL_CAPABILITIES;
  return { host: url.host, plainHttp: url.protocol === 'http:', capabilities: caps, origin };
}

/** The directory name containerd uses for a registry. */
function configDirName(registry: string): string {
  return registry === DOCKER_HUB_REGISTRY ? 'docker.io' : registry;
}

export class HostsConfig {
  private readonly cache = new Map<string, RegistryEndpoint[]>();

  /** `dir` is the `config_path` directory; undefined means no configuration (origin only, https). */
  constructor(readonly dir?: string, private readonly plainHttpHosts: boolean | string[] = false) {}

  private originPlain(registry: string): boolean {
    const plain = this.plainHttpHosts;
    return plain === true || (Array.isArray(plain) && plain.includes(registry));
  }

  private load(registry: string): { mirrors: RegistryEndpoint[]; server?: RegistryEndpoint } | undefined {
    if (!this.dir) return undefined;
    for (const name of [configDirName(registry), '_default']) {
      const file = join(this.dir, name, 'hosts.toml');
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        continue;
      }
      let doc: Record<string, unknown>;
      try {
        doc = parseToml(text) as Record<string, unknown>;
      } catch (err) {
        throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${file}: invalid TOML (${(err as Error).message})`);
      }
      const hosts = (doc.host ?? {}) as Record<string, Record<string, unknown>>;
      const mirrors = Object.entries(hosts).map(([url, table]) => endpointFrom(url, file, false, table));
      const server = typeof doc.server === 'string' && name !== '_default' ? endpointFrom(doc.server, file, true) : undefined;
      return { mirrors, server };
    }
    return undefined;
  }

  /** Endpoints to try for `registry` and a capability, mirrors first, the origin last. */
  endpoints(registry: string, capability: HostCapability): RegistryEndpoint[] {
    const key = `${registry} ${capability}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const loaded = this.load(registry);
    const origin: RegistryEndpoint = loaded?.server
      ? { ...loaded.server, plainHttp: loaded.server.plainHttp || this.originPlain(registry) }
      : { host: registry, plainHttp: this.originPlain(registry), capabilities: ALL_CAPABILITIES, origin: true };
    const list = [...(loaded?.mirrors ?? []).filter((m) => m.capabilities.includes(capability)), origin];
    this.cache.set(key, list);
    return list;
  }
}
