/**
 * Image locations on the command line: `oci:DIR[:TAG]` for an OCI image
 * layout, anything else a registry reference.
 */
import type { RegistryClient } from '../registry/client';
import { parseReference } from '../registry/reference';
import { OciLayout } from './oci-layout';
import { RegistryRepository } from './registry-repository';

export type ImageLocation = { kind: 'oci'; dir: string; tag?: string } | { kind: 'registry'; reference: string };

export function parseImageLocation(text: string): ImageLocation {
  if (text.startsWith('oci:')) {
    const rest = text.slice(4);
    // The tag is after the last ":" unless that part looks like a path.
    const colon = rest.lastIndexOf(':');
    if (colon > 0 && /^[\w][\w.-]{0,127}$/.test(rest.slice(colon + 1))) {
      return { kind: 'oci', dir: rest.slice(0, colon), tag: rest.slice(colon + 1) };
    }
    return { kind: 'oci', dir: rest };
  }
  return { kind: 'registry', reference: text };
}

export function isRegistryLocation(text: string): boolean {
  return parseImageLocation(text).kind === 'registry';
}

/** Open a location as a source or target; `client` is needed for registry locations. */
export function openImageLocation(text: string, client: () => RegistryClient): OciLayout | RegistryRepository {
  const location = parseImageLocation(text);
  if (location.kind === 'oci') return new OciLayout(location.dir, location.tag);
  return new RegistryRepository(client(), parseReference(location.reference));
}
