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
# shellcheck source=lib/live-server.sh
source scripts/lib/live-server.sh
npm_cache_install "$cache" "graphql-http@$GRAPHQL_HTTP_VERSION" "graphql@$GRAPHQL_VERSION"
cp scripts/graphql-http/audit.mjs "$cache/audit.mjs"
live_server_init

# audit NAME [VAR=VALUE...]: start a server with these settings, audit it, stop it.
failures=0
audit() {
  local name="$1"
  shift
  if ! start_server "$name" "$@"; then
    failures=$((failures + 1))
    return
  fi
  if ! node "$cache/audit.mjs" "$url/graphql" "$name" >&2; then
    failures=$((failures + 1))
  fi
  stop_server
}

audit embedded

if postgres_s3_settings gqlhttp; then
  audit postgres "${pg_s3_env[@]}" REELHOUSE__WORKERS__EMBEDDED=false
elif (($? == 2)); then
  failures=$((failures + 1))
fi

if ((failures)); then
  log "$failures audit(s) failed"
  exit 1
fi
log "0 errors, 0 warnings"
