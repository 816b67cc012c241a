/**
 * Errors the snapshotter returns to containerd, named after the gRPC codes
 * containerd maps back to its errdefs (NOT_FOUND -> ErrNotFound, ...).
 */
import { status } from '@grpc/grpc-js';

export type SnapshotErrorCode = 'NOT_FOUND' | 'ALREADY_EXISTS' | 'FAILED_PRECONDITION' | 'INVALID_ARGUMENT' | 'UNAVAILABLE' | 'INTERNAL';

const GRPC_CODES: Record<SnapshotErrorCode, status> = {
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
};

export class SnapshotError extends Error {
  constructor(readonly code: SnapshotErrorCode, message: string) {
    super(message);
    this.name = 'SnapshotError';
  }

  get grpcCode(): status {
    return GRPC_CODES[this.code];
  }
}
