/**
 * The two ends of an image conversion, each either an OCI image layout on
 * disk or a registry repository. The converter talks only to these
 * interfaces.
 */
import type { Readable } from 'node:stream';
import type { Descriptor } from './image-types';

export interface RootManifest {
  mediaType: string;
  digest: string;
  body: Buffer;
}

/** Registry host and repository, for cross-repository blob mounts. */
export interface RepositoryLocation {
  registry: string;
  repository: string;
}

export interface ImageSource {
  /** For messages: "oci:/path:tag" or "host/repo:tag". */
  readonly label: string;
  readonly location?: RepositoryLocation;
  /** The manifest or index the reference names. */
  resolveRoot(): Promise<RootManifest>;
  /** A manifest named by an index entry, verified against its digest. */
  readManifest(desc: Descriptor): Promise<Buffer>;
  /** A small blob (config), verified against its digest. */
  readBlob(desc: Descriptor): Promise<Buffer>;
  /** A blob's bytes as a stream; the caller verifies the digest. */
  openBlob(desc: Descriptor): Promise<Readable>;
  close(): Promise<void>;
}

export interface ImageTarget {
  readonly label: string;
  readonly location?: RepositoryLocation;
  hasBlob(desc: Descriptor): Promise<boolean>;
  /**
   * Store a blob. `open` gives its bytes (possibly more than once, for a
   * retry); `mountFrom` names a repository on the same registry that has it.
   */
  putBlob(desc: Descriptor, open: () => Readable, mountFrom?: RepositoryLocation): Promise<void>;
  /** Store a manifest; `root` marks the one that gets the tag. */
  putManifest(desc: Descriptor, body: Buffer, root: boolean): Promise<void>;
  close(): Promise<void>;
}
