/**
 * containerd leases: what is written or prepared while a lease is held
 * stays safe from the garbage collector until the lease is deleted, by
 * which time the image record and `gc.ref` labels keep it alive.
 */
import { randomBytes } from 'node:crypto';
import { isContainerdError } from './containerd-errors';
import type { ContainerdConnection } from './grpc-connection';

/** containerd drops a lease by itself after this time (RFC 3339), so a crashed pull leaks nothing for long. */
export const LABEL_GC_EXPIRE = 'containerd.io/gc.expire';

export interface LeaseOptions {
  /** Default: `lazypull-<random>`. */
  id?: string;
  /** Expiry after which containerd deletes the lease; default 1 hour. */
  expireAfterMs?: number;
  labels?: Record<string, string>;
}

export class LeaseService {
  constructor(private readonly conn: ContainerdConnection) {}

  async create(opts: LeaseOptions = {}): Promise<string> {
    const id = opts.id ?? `lazypull-${randomBytes(8).toString('hex')}`;
    // containerd parses the expiry with Go's time.RFC3339: no fractional seconds needed.
    const expire = new Date(Date.now() + (opts.expireAfterMs ?? 3_600_000)).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const res = await this.conn.unary<{ lease: { id: string } }>('leases', 'Create', { id, labels: { [LABEL_GC_EXPIRE]: expire, ...opts.labels } });
    return res.lease.id;
  }

  /** A lease that is already gone is not an error. */
  async delete(id: string, sync = false): Promise<void> {
    try {
      await this.conn.unary('leases', 'Delete', { id, sync });
    } catch (err) {
      if (!isContainerdError(err, 'NOT_FOUND')) throw err;
    }
  }
}

/**
 * Run `work` with a view of `conn` whose calls carry a new lease, and
 * delete the lease afterwards, whether `work` succeeded or not.
 */
export async function withLease<T>(conn: ContainerdConnection, work: (leased: ContainerdConnection) => Promise<T>, opts: LeaseOptions = {}): Promise<T> {
  const leases = new LeaseService(conn);
  const id = await leases.create(opts);
  let result: T;
  try {
    result = await work(conn.withLease(id));
  } catch (err) {
    await leases.delete(id).catch(() => undefined);
    throw err;
  }
  await leases.delete(id);
  return result;
}
