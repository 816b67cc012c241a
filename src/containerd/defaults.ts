/** Where containerd is by default (as for `ctr`), in a module without gRPC so that thin clients can use it. */
export const DEFAULT_CONTAINERD_ADDRESS = '/run/containerd/containerd.sock';
export const DEFAULT_CONTAINERD_NAMESPACE = 'default';
/** The name containerd's proxy_plugins entry gives the lazypull snapshotter in our docs; `lazypull pull` prepares layers with it. */
export const DEFAULT_SNAPSHOTTER = 'lazypull';
