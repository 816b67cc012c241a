/** The shapes containerd's API carries, as this client passes them around (camelCase, numbers for int64). */

/** A blob in containerd's content store (containerd.types.Descriptor). */
export interface ContentDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** What mount(2) needs for one part of a root filesystem (containerd.types.Mount). */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** containerd.types.Descriptor on the wire (keepCase: snake_case field names). */
export interface WireDescriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export function toWireDescriptor(d: ContentDescriptor): WireDescriptor {
  return { media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} };
}

export function fromWireDescriptor(d: Partial<WireDescriptor> | null | undefined): ContentDescriptor {
  const out: ContentDescriptor = { mediaType: d?.media_type ?? '', digest: d?.digest ?? '', size: Number(d?.size ?? 0) };
  if (d?.annotations && Object.keys(d.annotations).length > 0) out.annotations = { ...d.annotations };
  return out;
}

export function toWireMount(m: Mount): WireMount {
  return { type: m.type, source: m.source, target: m.target ?? '', options: [...m.options] };
}

export function fromWireMount(m: Partial<WireMount>): Mount {
  const out: Mount = { type: m.type ?? '', source: m.source ?? '', options: [...(m.options ?? [])] };
  if (m.target) out.target = m.target;
  return out;
}
