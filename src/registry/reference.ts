/**
 * Image references ("HOST[:PORT]/REPO[:TAG][@DIGEST]"), parsed with the
 * grammar of distribution/reference so that a name accepted here is one a
 * registry and containerd accept too. Docker Hub short names are expanded
 * the way the docker CLI does it ("ubuntu" -> registry-1.docker.io,
 * library/ubuntu, latest).
 */

import { LazypullError } from '../errors';

export interface ImageReference {
  /** "host", "host:port" or "[v6addr]:port"; never a scheme. */
  registry: string;
  /** Path components, e.g. "library/ubuntu". */
  repository: string;
  tag?: string;
  digest?: string;
}

/** Where "docker.io" names are actually served from. */
export const DOCKER_HUB_REGISTRY = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', DOCKER_HUB_REGISTRY]);
export const DEFAULT_TAG = 'latest';

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const HOST_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:.]+\\])(?::[0-9]{1,5})?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const KNOWN_DIGEST_HEX: Record<string, number> = { sha256: 64, sha512: 128 };
const MAX_NAME_LENGTH = 255;

function invalid(text: string, why: string): LazypullError {
  return new LazypullError('LAZYPULL_ERR_REFERENCE_INVALID', `invalid image reference "${text}": ${why}`, {
    reference: text,
  });
}

/** Checks "algo:hex"; throws LAZYPULL_ERR_REFERENCE_INVALID naming `context`. */
export function validateDigest(digest: string, context: string = digest): void {
  if (!DIGEST_RE.test(digest)) {
    throw invalid(context, `digest "${digest}" is not of the form "algorithm:hex"`);
  }
  const [algorithm, hex] = digest.split(':', 2) as [string, string];
  const expectedLength = KNOWN_DIGEST_HEX[algorithm];
  if (expectedLength !== undefined && !new RegExp(`^[a-f0-9]{${expectedLength}}$`).test(hex)) {
    throw invalid(context, `${algorithm} digest must be ${expectedLength} lowercase hex characters`);
  }
}

function looksLikeHost(component: string): boolean {
  // Same rule as the docker CLI: a first component is a registry if it has a
  // dot or a port, is "localhost", or is a bracketed IPv6 address.
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[');
}

export function parseReference(text: string): ImageReference {
  if (typeof text !== 'string' || text.length === 0) throw invalid(String(text), 'empty reference');
  if (text.trim() !== text || /\s/.test(text)) throw invalid(text, 'contains whitespace');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw invalid(text, 'must not include a scheme such as "docker://" or "https://"');
  }

  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    validateDigest(digest, text);
  }

  let tag: string | undefined;
  // A tag is after the last ':' that follows the last '/', so a port is never taken for a tag.
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon >= 0 && !rest.slice(lastSlash + 1).startsWith('[')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) {
      throw invalid(text, `tag "${tag}" must be 1-128 characters of [A-Za-z0-9_.-] not starting with "." or "-"`);
    }
  }

  if (rest.length === 0) throw invalid(text, 'missing repository name');
  let registry: string;
  let repository: string;
  const firstSlash = rest.indexOf('/');
  if (firstSlash > 0 && looksLikeHost(rest.slice(0, firstSlash))) {
    registry = rest.slice(0, firstSlash);
    repository = rest.slice(firstSlash + 1);
    if (!HOST_RE.test(registry)) throw invalid(text, `registry host "${registry}" is not a valid host[:port]`);
  } else {
    // "127.0.0.1:5000" alone is a registry with the repository forgotten, not image "127.0.0.1" at tag "5000".
    const forgotRepository =
      rest.startsWith('[') || (tag !== undefined && /^[0-9]+$/.test(tag) && (rest.includes('.') || rest === 'localhost'));
    if (forgotRepository) {
      throw invalid(text, `"${rest}" looks like a registry host but no repository follows it`);
    }
    registry = DOCKER_HUB_REGISTRY;
    repository = rest;
  }
  if (DOCKER_HUB_ALIASES.has(registry)) {
    registry = DOCKER_HUB_REGISTRY;
    if (!repository.includes('/')) repository = `library/${repository}`;
  }

  if (repository.length === 0) throw invalid(text, 'missing repository name');
  if (repository.length > MAX_NAME_LENGTH) throw invalid(text, `repository name is longer than ${MAX_NAME_LENGTH} characters`);
  for (const component of repository.split('/')) {
    if (component.length === 0) throw invalid(text, 'repository name has an empty path component');
    if (!PATH_COMPONENT_RE.test(component)) {
      const why = /[A-Z]/.test(component)
        ? 'repository name must be lowercase'
        : `repository path component "${component}" may only contain [a-z0-9] separated by ".", "_", "__" or "-"`;
      throw invalid(text, why);
    }
  }

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: ImageReference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

export function formatReference(ref: ImageReference): string {
  let text = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) text += `:${ref.tag}`;
  if (ref.digest !== undefined) text += `@${ref.digest}`;
  return text;
}

/** The same repository at another tag or digest (the other one is dropped). */
export function withDigest(ref: ImageReference, digest: string): ImageReference {
  return { registry: ref.registry, repository: ref.repository, digest };
}

export function withTag(ref: ImageReference, tag: string): ImageReference {
  return { registry: ref.registry, repository: ref.repository, tag };
}
