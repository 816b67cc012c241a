/**
 * The snapshotter daemon's configuration: a TOML file
 * (`/etc/lazypull/config.toml` by default, optional), overridden by
 * command-line flags, with defaults that let it run with neither.
 */
import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { LazypullError } from '../errors';
import { isLogLevel, type LogLevel } from '../util/json-log';
import { DEFAULT_SNAPSHOTTER_ADDRESS } from './pull-protocol';

export interface DaemonConfig {
  /** Metadata, snapshot directories and mountpoints. */
  root: string;
  /** The unix socket containerd's proxy_plugins entry points at. */
  address: string;
  cacheDir: string;
  /** Disk cache limit in bytes. */
  cacheSize: number;
  memoryCacheSize: number;
  prefetch: boolean;
  backgroundFetch: boolean;
  /** Refuse layers whose TOC digest annotation is missing (a mismatch is always refused). */
  requireTocDigest: boolean;
  /** containerd-style hosts.toml directory (mirrors, plain-HTTP origins). */
  hostsDir?: string;
  /** Registries spoken to over plain HTTP ("host:port"). */
  plainHttpRegistries: string[];
  logLevel: LogLevel;
  /** "host:port" for Prometheus metrics over HTTP; off when unset. */
  metricsAddress?: string;
}

export const DEFAULT_CONFIG_PATH = '/etc/lazypull/config.toml';

export function defaultConfig(): DaemonConfig {
  return {
    root: '/var/lib/lazypull',
    address: DEFAULT_SNAPSHOTTER_ADDRESS,
    cacheDir: '/var/lib/lazypull/cache',
    cacheSize: 10 * 1024 ** 3,
    memoryCacheSize: 128 * 1024 ** 2,
    prefetch: true,
    backgroundFetch: true,
    requireTocDigest: true,
    plainHttpRegistries: [],
    logLevel: 'info',
  };
}

/** TOML keys as users write them -> config fields, with the type each must have. */
const KEYS: Record<string, [keyof DaemonConfig, 'string' | 'number' | 'boolean' | 'string[]']> = {
  root: ['root', 'string'],
  address: ['address', 'string'],
  cache_dir: ['cacheDir', 'string'],
  cache_size: ['cacheSize', 'number'],
  memory_cache_size: ['memoryCacheSize', 'number'],
  prefetch: ['prefetch', 'boolean'],
  background_fetch: ['backgroundFetch', 'boolean'],
  require_toc_digest: ['requireTocDigest', 'boolean'],
  hosts_dir: ['hostsDir', 'string'],
  plain_http_registries: ['plainHttpRegistries', 'string[]'],
  log_level: ['logLevel', 'string'],
  metrics_address: ['metricsAddress', 'string'],
};

function configError(file: string, message: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `${file}: ${message}`, { file });
}

/** Read the TOML file; a missing default file is fine, a missing explicit one is not. */
export function loadConfigFile(path: string, explicit: boolean): Partial<DaemonConfig> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (!explicit && (err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw configError(path, `cannot read (${(err as NodeJS.ErrnoException).code})`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw configError(path, `invalid TOML (${(err as Error).message.split('\n')[0]})`);
  }
  const out: Partial<Record<keyof DaemonConfig, unknown>> = {};
  for (const [key, value] of Object.entries(doc)) {
    const known = KEYS[key];
    if (!known) throw configError(path, `unknown key "${key}" (known: ${Object.keys(KEYS).join(', ')})`);
    const [field, type] = known;
    const ok = type === 'string[]' ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : type === 'number' ? (typeof value === 'number' || typeof value === 'bigint') && Number(value) >= 0
      : typeof value === type;
    if (!ok) throw configError(path, `"${key}" must be ${type === 'string[]' ? 'a list of strings' : `a ${type}`}`);
    if (field === 'logLevel' && !isLogLevel(value as string)) throw configError(path, `"log_level" must be debug, info, warn or error`);
    out[field] = type === 'number' ? Number(value) : value;
  }
  return out as Partial<DaemonConfig>;
}

export interface DaemonFlags {
  config?: string;
  root?: string;
  address?: string;
  plainHttpRegistry?: string[];
  backgroundFetch?: boolean;
  logLevel?: string;
  metricsAddress?: string;
  hostsDir?: string;
}

/** defaults <- config file <- flags */
export function resolveConfig(flags: DaemonFlags): DaemonConfig {
  const fromFile = loadConfigFile(flags.config ?? DEFAULT_CONFIG_PATH, flags.config !== undefined);
  const config: DaemonConfig = { ...defaultConfig(), ...fromFile };
  if (flags.root !== undefined) {
    config.root = flags.root;
    // A private root keeps its cache inside unless the file says otherwise.
    if (fromFile.cacheDir === undefined) config.cacheDir = `${flags.root}/cache`;
  }
  if (flags.address !== undefined) config.address = flags.address;
  if (flags.plainHttpRegistry?.length) config.plainHttpRegistries = [...config.plainHttpRegistries, ...flags.plainHttpRegistry];
  if (flags.backgroundFetch === false) config.backgroundFetch = false;
  if (flags.hostsDir !== undefined) config.hostsDir = flags.hostsDir;
  if (flags.metricsAddress !== undefined) config.metricsAddress = flags.metricsAddress;
  if (flags.logLevel !== undefined) {
    if (!isLogLevel(flags.logLevel)) throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `--log-level must be debug, info, warn or error`);
    config.logLevel = flags.logLevel;
  }
  return config;
}
