/**
 * Media types of the OCI image spec and their Docker schema 2 equivalents,
 * and the Accept list the client sends for manifests.
 */

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const OCI_LAYER_NONDISTRIBUTABLE_GZIP = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const DOCKER_LAYER_FOREIGN_GZIP = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
/** Schema 1 is not supported; named so the error can say what was served. */
export const DOCKER_MANIFEST_V1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
export const DOCKER_MANIFEST_V1 = 'application/vnd.docker.distribution.manifest.v1+json';

/** Everything getManifest accepts by default: single-platform manifests and indexes. */
export const MANIFEST_ACCEPT: readonly string[] = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST];

export const IMAGE_MANIFEST_TYPES: readonly string[] = [OCI_MANIFEST, DOCKER_MANIFEST];
export const IMAGE_INDEX_TYPES: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST];

export function isImageManifest(mediaType: string): boolean {
  return IMAGE_MANIFEST_TYPES.includes(mediaType);
}

export function isImageIndex(mediaType: string): boolean {
  return IMAGE_INDEX_TYPES.includes(mediaType);
}

export function isGzipLayer(mediaType: string): boolean {
  return (
    mediaType === OCI_LAYER_GZIP ||
    mediaType === DOCKER_LAYER_GZIP ||
    mediaType === OCI_LAYER_NONDISTRIBUTABLE_GZIP ||
    mediaType === DOCKER_LAYER_FOREIGN_GZIP
  );
}
