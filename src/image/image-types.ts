/**
 * OCI / Docker image structures as far as conversion needs them, and
 * platform selection for multi-platform images.
 */
import { LazypullError } from '../errors';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  [extra: string]: unknown;
}

export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  [extra: string]: unknown;
}

export interface ImageIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  [extra: string]: unknown;
}

export interface ImageConfig {
  rootfs?: { type: string; diff_ids: string[] };
  history?: unknown[];
  [extra: string]: unknown;
}

/** Node's names for CPU architectures, mapped to the OCI ones. */
const ARCH_BY_NODE: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

export function hostPlatform(): Platform {
  return { os: process.platform === 'win32' ? 'windows' : process.platform, architecture: ARCH_BY_NODE[process.arch] ?? process.arch };
}

/** "os/arch[/variant]" */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new LazypullError('LAZYPULL_ERR_INVALID_ARGUMENT', `--platform expects OS/ARCH[/VARIANT], got "${text}"`);
  }
  return { os: parts[0], architecture: parts[1], variant: parts[2] };
}

export function formatPlatform(p: Platform | undefined): string {
  if (!p) return 'unknown';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

export function platformMatches(wanted: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  if (wanted.os !== have.os || wanted.architecture !== have.architecture) return false;
  return wanted.variant === undefined || wanted.variant === have.variant;
}

export function parseJson<T>(body: Buffer, what: string): T {
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch (err) {
    throw new LazypullError('LAZYPULL_ERR_MANIFEST_UNSUPPORTED', `${what} is not valid JSON (${(err as Error).message})`);
  }
}
