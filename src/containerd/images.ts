/**
 * containerd's image records: a name (as `ctr images ls` shows it) mapped
 * to the descriptor of a manifest or index in the content store.
 */
import { isContainerdError } from './containerd-errors';
import type { ContainerdConnection } from './grpc-connection';
import { fromWireDescriptor, toWireDescriptor, type ContentDescriptor, type WireDescriptor } from './types';

export interface ImageRecord {
  name: string;
  target: ContentDescriptor;
  labels: Record<string, string>;
}

interface WireImage {
  name: string;
  labels: Record<string, string>;
  target: WireDescriptor | null;
}

function fromWire(i: WireImage): ImageRecord {
  return { name: i.name, target: fromWireDescriptor(i.target), labels: { ...i.labels } };
}

function toWire(i: { name: string; target: ContentDescriptor; labels?: Record<string, string> }): WireImage {
  return { name: i.name, labels: i.labels ?? {}, target: toWireDescriptor(i.target) };
}

export class ImageService {
  constructor(private readonly conn: ContainerdConnection) {}

  async get(name: string): Promise<ImageRecord | undefined> {
    try {
      return fromWire((await this.conn.unary<{ image: WireImage }>('images', 'Get', { name })).image);
    } catch (err) {
      if (isContainerdError(err, 'NOT_FOUND')) return undefined;
      throw err;
    }
  }

  /** Fails with ALREADY_EXISTS if the name is taken. */
  async create(image: { name: string; target: ContentDescriptor; labels?: Record<string, string> }): Promise<ImageRecord> {
    return fromWire((await this.conn.unary<{ image: WireImage }>('images', 'Create', { image: toWire(image) })).image);
  }

  /** Replace target and labels of an existing record (NOT_FOUND if there is none). */
  async update(image: { name: string; target: ContentDescriptor; labels?: Record<string, string> }): Promise<ImageRecord> {
    return fromWire((await this.conn.unary<{ image: WireImage }>('images', 'Update', { image: toWire(image) })).image);
  }

  /** Create the record, or point the existing one at the new target, as `ctr image pull` does. */
  async put(image: { name: string; target: ContentDescriptor; labels?: Record<string, string> }): Promise<{ image: ImageRecord; created: boolean }> {
    try {
      return { image: await this.create(image), created: true };
    } catch (err) {
      if (!isContainerdError(err, 'ALREADY_EXISTS')) throw err;
      return { image: await this.update(image), created: false };
    }
  }

  /** `sync`: return only after the garbage collector has run. */
  async delete(name: string, sync = false): Promise<void> {
    await this.conn.unary('images', 'Delete', { name, sync });
  }
}
