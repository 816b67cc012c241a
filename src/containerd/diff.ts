/**
 * containerd's differ: unpack a layer blob from the content store onto a
 * snapshot's mounts. Compressed layers (gzip, and eStargz, which is gzip)
 * are decompressed by containerd; the answer is the uncompressed layer's
 * descriptor, whose digest is the layer's diff ID.
 */
import type { ContainerdConnection } from './grpc-connection';
import { fromWireDescriptor, toWireDescriptor, toWireMount, type ContentDescriptor, type Mount, type WireDescriptor } from './types';

export class DiffService {
  constructor(private readonly conn: ContainerdConnection) {}

  async apply(layer: ContentDescriptor, mounts: Mount[]): Promise<ContentDescriptor> {
    const res = await this.conn.unary<{ applied: WireDescriptor | null }>('diff', 'Apply', {
      diff: toWireDescriptor(layer),
      mounts: mounts.map(toWireMount),
    });
    return fromWireDescriptor(res.applied);
  }
}
