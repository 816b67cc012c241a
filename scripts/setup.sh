#!/usr/bin/env bash
# Installs everything lazypull needs on a fresh Debian 12 machine (as root),
# builds it, and runs the built-in demo. `--no-demo` stops after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

run_demo=1
[ "${1:-}" = "--no-demo" ] && run_demo=0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs system packages and the tests mount filesystems)" >&2
  exit 1
fi

# System packages: container runtime pieces, a real registry, FUSE, the
# reference converter (benchmark baseline and compatibility tests), and the
# tools the tests use to build and inspect layers.
PACKAGES=(
  containerd runc containernetworking-plugins docker-registry
  libfuse2 fuse3 skopeo busybox-static debootstrap stargz-snapshotter
  apache2-utils openssl attr iproute2 tar gzip python3 strace
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The Debian containerd package may start a system daemon; lazypull's tests and
# demo start their own with private roots and sockets, so it is not needed.

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required (found $(node --version))" >&2
  exit 1
fi

# `npm install` follows package-lock.json; `npm ci` is not used because npm 11
# rejects lock files that omit other platforms' optional packages (lmdb's).
npm install --no-audit --no-fund
npm run build

if [ "$run_demo" = 1 ]; then
  node dist/src/cli/main.js demo
fi
