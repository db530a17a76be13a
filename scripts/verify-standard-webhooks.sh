#!/usr/bin/env bash
# Verify recorded webhook deliveries with the official Standard Webhooks verifier
# libraries, unchanged: PyPI `standardwebhooks` and npm `standardwebhooks`
# (scripts/standard-webhooks/verify.{py,cjs}; both must accept every delivery and
# refuse tampered copies). The webhook tests (server/tests/api/webhooks.rs) run it
# on what their receiver got; `scripts/test.sh` runs `--install` once first.
#
#   scripts/verify-standard-webhooks.sh --install        # install only (idempotent)
#   scripts/verify-standard-webhooks.sh DELIVERIES.json  # install if needed, verify
#
# The libraries go to a cache dir (STANDARD_WEBHOOKS_CACHE, default
# ~/.cache/reelhouse/standard-webhooks), once per version pin; concurrent runs
# (tests in parallel) install under a lock.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'verify-standard-webhooks: %s\n' "$*" >&2; }

PY_VERSION="${STANDARD_WEBHOOKS_PY_VERSION:-1.1.0}"
NPM_VERSION="${STANDARD_WEBHOOKS_NPM_VERSION:-1.1.1}"
cache="${STANDARD_WEBHOOKS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse/standard-webhooks}"
py_dir="$cache/python-$PY_VERSION"
node_dir="$cache/node-$NPM_VERSION"

# Node.js >= 22 (scripts/node.sh); npm runs on it too.
use_node() {
  local node_bin
  node_bin="$("$REPO_ROOT/scripts/node.sh")"
  export PATH="${node_bin%/*}:$PATH"
}

install() {
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [[ ! -f "$py_dir/.installed" ]]; then
    command -v python3 >/dev/null 2>&1 || "$REPO_ROOT/scripts/bootstrap.sh" --packages python3 python3-pip
    log "installing standardwebhooks==$PY_VERSION (PyPI) into $py_dir"
    rm -rf "$py_dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-input --target "$py_dir" \
      "standardwebhooks==$PY_VERSION" >&2
    touch "$py_dir/.installed"
  fi
  if [[ ! -f "$node_dir/.installed" ]]; then
    log "installing standardwebhooks@$NPM_VERSION (npm) into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    printf '{"name":"reelhouse-standard-webhooks-verifier","private":true}\n' >"$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error "standardwebhooks@$NPM_VERSION" >&2)
    touch "$node_dir/.installed"
  fi
  flock -u 9
}

case "${1:-}" in
  --install)
    use_node
    install
    ;;
  "" | -h | --help)
    sed -n '2,13p' "$0"
    exit 2
    ;;
  *)
    deliveries="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    use_node
    install
    PYTHONPATH="$py_dir" python3 "$REPO_ROOT/scripts/standard-webhooks/verify.py" "$deliveries"
    NODE_PATH="$node_dir/node_modules" node "$REPO_ROOT/scripts/standard-webhooks/verify.cjs" "$deliveries"
    ;;
esac
