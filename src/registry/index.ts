/** The registry client's public surface, for `import ... from '../registry'`. */

export { RegistryClient } from './client';
export type { FetchedManifest, GetBlobOptions, ManifestDescriptor, PushBlobOptions, PushBlobResult, RegistryClientOptions } from './client';
export { formatReference, parseReference, validateDigest, withDigest, withTag, DOCKER_HUB_REGISTRY } from './reference';
export type { ImageReference } from './reference';
export { computeDigest, DigestVerifier } from './digest';
export * as mediaTypes from './media-types';
