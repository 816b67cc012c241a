/**
 * A private CNI network for the pod sandboxes of one CRI environment: a
 * bridge with a per-run name, a /24 from 10.0.0.0/8 that no host interface
 * or route uses, host-local IPAM with its data in the run's dir, and no
 * default route in the pods, so pod traffic can only reach the bridge.
 *
 * `isGateway` stays false (it would switch on the host's IP forwarding). With
 * `hostAccess`, the gateway address goes on the bridge so the host reaches
 * pods directly on the link (readiness checks, demos).
 *
 * Teardown deletes the bridge and go-cni's cache entries for the network
 * (containerd keeps them in /var/lib/cni/results whatever the config says).
 * All synchronous, so the same code serves stop() and the exit hook.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LazypullError } from '../errors';
import { requireBinary } from './prerequisites';

/** Where containerd's go-cni keeps its results cache, fixed in go-cni. */
export const CNI_RESULTS_DIR = '/var/lib/cni/results';
export const CNI_BIN_DIR = '/usr/lib/cni';

export interface CniNetworkOptions {
  /** "10.X.Y.0/24"; default a free one picked at random. */
  subnet?: string;
  /** Put the gateway address on the bridge so the host reaches pods; default true. */
  hostAccess?: boolean;
}

export interface CniNetwork {
  /** CNI network name ("lazypull-cri-<id>"). */
  name: string;
  /** Linux bridge name ("lzp<id>", at most 15 characters). */
  bridge: string;
  /** "10.X.Y.0/24" */
  subnet: string;
  /** "10.X.Y.1": on the bridge when hostAccess. */
  gateway: string;
  /** Directory holding the conflist, to give containerd as `conf_dir`. */
  confDir: string;
  /** host-local's allocation dir. */
  ipamDir: string;
  /** True when `ip` is in the subnet (and not the gateway). */
  contains(ip: string): boolean;
  /**
   * Delete the bridge and go-cni's cache entries for this network, and the
   * loopback network's entries of the given sandboxes; synchronous.
   */
  remove(sandboxIds?: Iterable<string>): void;
}

function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return NaN;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

function parseCidr(cidr: string): { base: number; bits: number } | undefined {
  const [addr, bitsText] = cidr.split('/');
  const bits = bitsText === undefined ? 32 : Number(bitsText);
  const ip = ipToInt(addr ?? '');
  if (Number.isNaN(ip) || !Number.isInteger(bits) || bits < 0 || bits > 32) return undefined;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { base: (ip & mask) >>> 0, bits };
}

function overlaps(a: { base: number; bits: number }, b: { base: number; bits: number }): boolean {
  const bits = Math.min(a.bits, b.bits);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
}

/** Every IPv4 prefix the host uses: interface addresses and routes. */
function hostPrefixes(ipBinary: string): Array<{ base: number; bits: number }> {
  const found: Array<{ base: number; bits: number }> = [];
  const addrs = JSON.parse(execFileSync(ipBinary, ['-4', '-j', 'addr', 'show'], { encoding: 'utf8' }) || '[]') as Array<{
    addr_info?: Array<{ local?: string; prefixlen?: number }>;
  }>;
  for (const link of addrs) {
    for (const a of link.addr_info ?? []) {
      const p = a.local !== undefined ? parseCidr(`${a.local}/${a.prefixlen ?? 32}`) : undefined;
      if (p) found.push(p);
    }
  }
  const routes = JSON.parse(execFileSync(ipBinary, ['-4', '-j', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }) || '[]') as Array<{ dst?: string }>;
  for (const r of routes) {
    if (r.dst === undefined || r.dst === 'default') continue;
    const p = parseCidr(r.dst);
    if (p) found.push(p);
  }
  return found;
}

/** A random 10.X.Y.0/24 (X in 128..254) that overlaps nothing the host uses. */
function pickSubnet(ipBinary: string): string {
  const used = hostPrefixes(ipBinary);
  for (let attempt = 0; attempt < 200; attempt++) {
    const bytes = randomBytes(2);
    const candidate = `10.${128 + (bytes[0] % 127)}.${bytes[1]}.0/24`;
    const parsed = parseCidr(candidate);
    if (parsed && !used.some((u) => overlaps(u, parsed))) return candidate;
  }
  throw new LazypullError('LAZYPULL_ERR_SANDBOX', 'no free /24 in 10.128.0.0/9 for the pod network');
}

function run(ipBinary: string, args: string[]): void {
  try {
    execFileSync(ipBinary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim();
    throw new LazypullError('LAZYPULL_ERR_SANDBOX', `ip ${args.join(' ')} failed: ${stderr || (err as Error).message}`, { command: `ip ${args[0] ?? ''}` });
  }
}

/** The loopback network go-cni adds to every sandbox, whatever the config dir holds. */
const LOOPBACK_NETWORK = 'cni-loopback';

/** go-cni names its cache files "<network>-<sandbox id>-<ifname>". */
function removeCacheEntries(network: string, sandboxIds: Set<string>): void {
  let names: string[];
  try {
    names = readdirSync(CNI_RESULTS_DIR);
  } catch {
    return;
  }
  const loopbackPrefix = `${LOOPBACK_NETWORK}-`;
  for (const name of names) {
    const ours = name.startsWith(`${network}-`) || (name.startsWith(loopbackPrefix) && sandboxIds.has(name.slice(loopbackPrefix.length).replace(/-[^-]+$/, '')));
    if (ours) rmSync(join(CNI_RESULTS_DIR, name), { force: true });
  }
}

function deleteLink(ipBinary: string, name: string): void {
  try {
    execFileSync(ipBinary, ['link', 'delete', name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/**
 * Write the conflist into `dir`/cni/net.d and create the bridge. The bridge
 * is made here (not by the plugin on the first pod) so its lifetime is ours
 * and the gateway address can be added before any pod exists.
 */
export function createCniNetwork(dir: string, opts: CniNetworkOptions = {}): CniNetwork {
  const ipBinary = requireBinary('ip', 'iproute2');
  for (const plugin of ['bridge', 'host-local', 'portmap', 'loopback']) {
    if (!existsSync(join(CNI_BIN_DIR, plugin))) {
      throw new LazypullError(
        'LAZYPULL_ERR_PREREQUISITE_MISSING',
        `CNI plugin ${plugin} is not in ${CNI_BIN_DIR}: install the Debian package containernetworking-plugins`,
        { binary: plugin, package: 'containernetworking-plugins' },
      );
    }
  }
  const id = randomBytes(4).toString('hex');
  const name = `lazypull-cri-${id}`;
  const bridge = `lzp${id}`;
  const subnet = opts.subnet ?? pickSubnet(ipBinary);
  const parsed = parseCidr(subnet);
  if (parsed === undefined || parsed.bits > 30) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `pod subnet ${JSON.stringify(subnet)} is not an IPv4 CIDR of /30 or larger`, { subnet });
  }
  const gw = parsed.base + 1;
  const gateway = [gw >>> 24, (gw >>> 16) & 255, (gw >>> 8) & 255, gw & 255].join('.');
  const confDir = join(dir, 'cni', 'net.d');
  const ipamDir = join(dir, 'cni', 'ipam');
  mkdirSync(confDir, { recursive: true });
  mkdirSync(ipamDir, { recursive: true });
  const conflist = {
    cniVersion: '1.0.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: false,
        ipMasq: false,
        hairpinMode: true,
        // No routes: pods reach their subnet (and the host on the bridge) only.
        ipam: { type: 'host-local', dataDir: ipamDir, ranges: [[{ subnet, gateway }]], routes: [] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  writeFileSync(join(confDir, '10-lazypull.conflist'), JSON.stringify(conflist, null, 2));

  const remove = (sandboxIds: Iterable<string> = []): void => {
    deleteLink(ipBinary, bridge);
    removeCacheEntries(name, new Set(sandboxIds));
  };
  try {
    run(ipBinary, ['link', 'add', 'name', bridge, 'type', 'bridge']);
    run(ipBinary, ['link', 'set', bridge, 'up']);
    if (opts.hostAccess !== false) run(ipBinary, ['addr', 'add', `${gateway}/${parsed.bits}`, 'dev', bridge]);
  } catch (err) {
    remove();
    throw err;
  }
  const contains = (ip: string): boolean => {
    const n = ipToInt(ip);
    return !Number.isNaN(n) && n !== gw && overlaps({ base: n, bits: 32 }, parsed);
  };
  return { name, bridge, subnet, gateway, confDir, ipamDir, contains, remove };
}
