#!/usr/bin/env bash
# GraphQL over HTTP, to the letter (part of `make test`): the audit suite of the
# `graphql-http` npm package (`auditServer`) against /graphql of an embedded server
# (SQLite, local disk) and, when the test services are up (.test-services/env, as
# test.sh sources it), of a PostgreSQL + Redis + S3 one. Fails on any error or
# warning; notices are printed.
#
# The npm packages go to a cache dir (GRAPHQL_HTTP_CACHE, default
# ~/.cache/reelhouse/graphql-http), installed once per version pin.
# REELHOUSE_BIN: use this server binary instead of building it.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test-graphql-http: %s\n' "$*" >&2; }

# The audit's package versions (graphql-http's suite is what is being met).
GRAPHQL_HTTP_VERSION="${GRAPHQL_HTTP_VERSION:-1.23.1}"
GRAPHQL_VERSION="${GRAPHQL_VERSION:-16}"

# Node.js >= 22 (scripts/node.sh); npm runs on it too.
node_bin="$(scripts/node.sh)"
export PATH="${node_bin%/*}:$PATH"
cache="${GRAPHQL_HTTP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse/graphql-http}"
stamp="$cache/.installed-$GRAPHQL_HTTP_VERSION-$GRAPHQL_VERSION"
if [[ ! -f "$stamp" ]]; then
  log "installing graphql-http@$GRAPHQL_HTTP_VERSION graphql@$GRAPHQL_VERSION into $cache"
  mkdir -p "$cache"
  [[ -f "$cache/package.json" ]] || printf '{"name":"reelhouse-graphql-http-audit","private":true,"type":"module"}\n' >"$cache/package.json"
  (cd "$cache" && npm install --no-audit --no-fund --loglevel=error \
    "graphql-http@$GRAPHQL_HTTP_VERSION" "graphql@$GRAPHQL_VERSION")
  touch "$stamp"
fi
cp scripts/graphql-http/audit.mjs "$cache/audit.mjs"

target="${CARGO_TARGET_DIR:-target}"
if [[ -z "${REELHOUSE_BIN:-}" ]]; then
  cargo build -q -p reelhouse
fi
bin="${REELHOUSE_BIN:-$target/debug/reelhouse}"

work="$(mktemp -d)"
pids=()
drop_db=""
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$drop_db" && -n "${PSQL:-}" ]]; then
    "$PSQL" -q "$REELHOUSE_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $drop_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# audit NAME [VAR=VALUE...]: start a server with these settings, audit it, stop it.
failures=0
audit() {
  local name="$1" port url pid logfile
  shift
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  logfile="$work/server-$name.log"
  env -u DATABASE_URL -u REDIS_URL -u S3_ENDPOINT -u S3_BUCKET REELHOUSE__TELEMETRY__LEVEL=warn "$@" \
    "$bin" serve --bind "127.0.0.1:$port" --data-dir "$work/data-$name" >"$logfile" 2>&1 &
  pid=$!
  pids+=("$pid")
  local up=0
  for _ in $(seq 1 150); do
    if curl -sf "$url/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if ((!up)); then
    log "$name: the server did not start:"
    tail -20 "$logfile" >&2
    failures=$((failures + 1))
    return
  fi
  if ! node "$cache/audit.mjs" "$url/graphql" "$name" >&2; then
    failures=$((failures + 1))
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

audit embedded

if [[ -n "${REELHOUSE_TEST_PG_URL:-}" ]]; then
  PSQL="$(command -v psql || true)"
  for bindir in /usr/lib/postgresql/*/bin; do [[ -z "$PSQL" && -x "$bindir/psql" ]] && PSQL="$bindir/psql"; done
  if [[ -z "$PSQL" ]]; then
    log "psql not found: cannot audit the PostgreSQL backend"
    failures=$((failures + 1))
  else
    suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    drop_db="reelhouse_gqlhttp_$suffix"
    "$PSQL" -q "$REELHOUSE_TEST_PG_URL" -c "CREATE DATABASE $drop_db" >/dev/null
    db_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' \
      "$REELHOUSE_TEST_PG_URL" "$drop_db")"
    audit postgres \
      DATABASE_URL="$db_url" \
      REDIS_URL="$REELHOUSE_TEST_REDIS_URL" \
      REELHOUSE__REDIS__KEY_PREFIX="reelhouse-gqlhttp-$suffix:" \
      S3_ENDPOINT="$REELHOUSE_TEST_S3_ENDPOINT" \
      S3_BUCKET="$REELHOUSE_TEST_S3_BUCKET" \
      S3_REGION="$REELHOUSE_TEST_S3_REGION" \
      S3_ACCESS_KEY_ID="$REELHOUSE_TEST_S3_ACCESS_KEY_ID" \
      S3_SECRET_ACCESS_KEY="$REELHOUSE_TEST_S3_SECRET_ACCESS_KEY" \
      REELHOUSE__STORAGE__S3__KEY_PREFIX="gqlhttp-$suffix/" \
      REELHOUSE__AUTH__JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" \
      REELHOUSE__WORKERS__EMBEDDED=false
  fi
else
  log "no test services (.test-services/env not sourced): PostgreSQL backend not audited"
fi

if ((failures)); then
  log "$failures audit(s) failed"
  exit 1
fi
log "0 errors, 0 warnings"
