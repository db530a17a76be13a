#!/usr/bin/env bash
# Load-harness smoke test (part of `make test`): builds `reelhouse` and `reelhouse-load`,
# starts an embedded server (SQLite, local disk, a one-rung ladder) on a free port in a
# temporary data dir, runs a few short scenarios with a few users and checks the last
# line of each JSON report: errors == 0, lost_events == 0, duplicate_events == 0, and
# that the scenario did what it is for (videos READY, events received, requests made).
# Timings are printed, never asserted. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# REELHOUSE_BIN / REELHOUSE_LOAD_BIN: use these binaries instead of building them.
target="${CARGO_TARGET_DIR:-target}"
if [[ -z "${REELHOUSE_BIN:-}" || -z "${REELHOUSE_LOAD_BIN:-}" ]]; then
  cargo build -q -p reelhouse && cargo build -q -p reelhouse-load
fi
server_bin="${REELHOUSE_BIN:-$target/debug/reelhouse}"
load_bin="${REELHOUSE_LOAD_BIN:-$target/debug/reelhouse-load}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Embedded mode: the shared test services (sourced by test.sh) must not leak in.
for var in $(compgen -e); do
  case "$var" in DATABASE_URL|REDIS_URL|S3_*|REELHOUSE_*) unset "$var" ;; esac
done

# start_server NAME [VAR=VALUE...]: an embedded server (one-rung ladder, no rate limits,
# no WebSocket caps: every simulated client shares 127.0.0.1; NAME default-limits keeps
# both as they are by default) in its own data dir on a
# free port, with extra settings; sets server_pid and url.
start_server() {
  local name="$1"
  shift
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  url="http://127.0.0.1:$port"
  server_log="$work/server-$name.log"
  # `default-limits`: rate limits and WebSocket caps as a new user's server has them.
  local limits=(REELHOUSE__RATE_LIMIT__ENABLED=false
    REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_IP=1000000
    REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_USER=1000000
    REELHOUSE__GRAPHQL__WS_MAX_SUBSCRIPTIONS_PER_USER=1000000)
  if [[ "$name" == default-limits ]]; then limits=(REELHOUSE__RATE_LIMIT__ENABLED=true); fi
  env "${limits[@]}" \
    REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD=true \
    REELHOUSE__MEDIA__LADDER='[{lines=240,video_bitrate_kbps=300}]' \
    REELHOUSE__MEDIA__SPEED_PRESET=ultrafast \
    REELHOUSE__TELEMETRY__LEVEL=warn \
    "$@" \
    "$server_bin" serve --bind "127.0.0.1:$port" --data-dir "$work/data-$name" >"$server_log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf "$url/health" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "test-load: the server died:" >&2; tail -20 "$server_log" >&2; exit 1; }
    sleep 0.2
  done
  echo "test-load: the server did not answer /health" >&2
  exit 1
}

failures=0
# run NAME CHECK ARGS...: run the harness, then check its last JSON line with CHECK (a
# Python expression over `r`, the report) on top of the common zero-errors checks.
run() {
  local name="$1" check="$2"
  shift 2
  printf '\n==> reelhouse-load %s\n' "$*" >&2
  local out="$work/$name.out" started=$SECONDS
  if ! "$load_bin" --target "$url" --server-pid "$server_pid" --json "$@" >"$out" 2>"$work/$name.err"; then
    echo "test-load: $name: the harness failed:" >&2
    cat "$work/$name.err" "$out" >&2
    failures=$((failures + 1))
    return
  fi
  head -n -1 "$out" >&2
  if ! tail -n 1 "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
problems = [f"{k} = {r[k]}" for k in ("errors", "lost_events", "duplicate_events") if r[k] != 0]
if not eval(sys.argv[1]):
    problems.append("check failed: " + sys.argv[1])
if problems:
    print("test-load: " + sys.argv[2] + ": " + "; ".join(problems), file=sys.stderr)
    for e in r.get("error_samples", []):
        print("  error: " + e, file=sys.stderr)
    sys.exit(1)
' "$check" "$name"; then
    failures=$((failures + 1))
  fi
  printf '    (%ss)\n' $((SECONDS - started)) >&2
}

start_server main
# Three users uploading at once on embedded SQLite, beside the worker's writes.
run encodes 'r["videos_ready"] >= 3 and r["events_received"] > 0 and r["subscriptions"] >= 7' \
  --scenario encodes --users 3 --subscribers 4 --duration 3s --ready-timeout 90s
run api 'r["requests"] > 20 and r["api_latency_ms"]["count"] > 0' \
  --scenario api --users 3 --duration 3s
run fanout 'r["fanout"]["reelhouse"]["events"] >= 2 and r["fanout"]["reelhouse"]["subscribers"] == 20' \
  --scenario fanout --users 1 --subscribers 20 --duration 2s --ready-timeout 90s
run soak 'r["videos_ready"] >= 1 and r["fanout"]["reelhouse"]["events"] >= 2 and r["rss"] is not None' \
  --scenario soak --users 2 --subscribers 8 --duration 4s --ready-timeout 90s

# Runs longer than an access token's life (15 min by default): with 10 s tokens, the
# server closes every feed when its token expires (4403), and each must renew its
# token and resume after its last cursor with nothing lost or repeated; the API and
# upload calls must renew in time too.
start_server short-tokens REELHOUSE__AUTH__ACCESS_TOKEN_TTL_SECS=10 REELHOUSE__GRAPHQL__WS_RECHECK_MS=500
run token-expiry 'r["reconnects"] >= 3 and r["videos_ready"] >= 1 and r["fanout"]["reelhouse"]["events"] >= 2' \
  --scenario soak --users 2 --subscribers 6 --duration 25s --ready-timeout 90s

# A server with default settings, as a new user runs it: more sign-ups from one address
# than the `auth_ip` burst (20) and more calls than the `api` burst (200). The harness must
# wait for each 429 (Retry-After), count the refusals apart from errors (errors stay 0),
# and say at start and in the summary that the target limits it and how to turn that off.
start_server default-limits
run default-limits 'r["rate_limited"] > 0 and r["requests"] > 0 and "RATE_LIMIT__ENABLED=false" in (r["rate_limit_note"] or "")' \
  --scenario api --users 24 --duration 3s
if ! grep -q "rate-limits this harness" "$work/default-limits.err"; then
  echo "test-load: default-limits: the harness did not say at start that the target limits it:" >&2
  cat "$work/default-limits.err" >&2
  failures=$((failures + 1))
fi

if ((failures)); then
  echo "test-load: $failures scenario(s) failed; server log tail:" >&2
  tail -30 "$server_log" >&2
  exit 1
fi
echo "test-load: all scenarios passed (no errors, no lost or duplicate events)" >&2
