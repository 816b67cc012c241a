/**
 * Errors from containerd's API. Every failed call becomes a ContainerdError
 * with the stable code `LAZYPULL_ERR_CONTAINERD` and the gRPC status name
 * (`NOT_FOUND`, `ALREADY_EXISTS`, `UNAVAILABLE`, ...) that callers branch
 * on, plus the service method and the socket it was sent to.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import { redact } from '../errors';

export type GrpcStatusName = keyof typeof status;

export class ContainerdError extends Error {
  readonly code = 'LAZYPULL_ERR_CONTAINERD' as const;
  /** The gRPC status containerd answered with; containerd maps its errdefs onto these. */
  readonly status: GrpcStatusName;
  readonly details: Record<string, string | number | undefined>;

  constructor(statusName: GrpcStatusName, message: string, details: Record<string, string | number | undefined> = {}, options?: { cause?: unknown }) {
    super(redact(message), options);
    this.name = 'ContainerdError';
    this.status = statusName;
    this.details = details;
  }
}

export function isContainerdError(value: unknown, statusName?: GrpcStatusName): value is ContainerdError {
  return value instanceof ContainerdError && (statusName === undefined || value.status === statusName);
}

function statusName(code: number | undefined): GrpcStatusName {
  const name = code === undefined ? undefined : (status[code] as GrpcStatusName | undefined);
  return name ?? 'UNKNOWN';
}

/** A grpc-js error (or anything thrown around a call) as a ContainerdError naming the method and socket. */
export function fromCallError(value: unknown, method: string, address: string): ContainerdError {
  if (value instanceof ContainerdError) return value;
  const err = value as Partial<ServiceError> | undefined;
  const name = statusName(typeof err?.code === 'number' ? err.code : undefined);
  const text = (typeof err?.details === 'string' && err.details) || (err instanceof Error ? err.message : String(value));
  const hint = name === 'UNAVAILABLE' ? ` (is containerd running at ${address}?)` : '';
  return new ContainerdError(name, `containerd ${method} failed: ${text}${hint} [${name}]`, { method, address }, { cause: value });
}
