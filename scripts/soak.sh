#!/usr/bin/env bash
# The long soak (`make soak`, issue 22): an embedded release server (SQLite, local disk,
# one 240p rung at `ultrafast`, rate limits and WebSocket caps off, as in docs/BENCHMARKS.md)
# under `reelhouse-load --scenario soak` for SOAK_DURATION (default 2h), while this script
# samples the server's VmRSS/RssAnon every 10 s into $SOAK_OUT/rss.csv and prints the
# min..max per SOAK_WINDOW_MIN (default 10) minutes at the end, with the harness report.
# Nothing is asserted about timing; the harness fails on any error, lost or duplicate event.
#   SOAK_DURATION=2h SOAK_USERS=2 SOAK_SUBSCRIBERS=10 SOAK_NICE=0 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${SOAK_DURATION:-2h}"
users="${SOAK_USERS:-2}"
subscribers="${SOAK_SUBSCRIBERS:-10}"
window="${SOAK_WINDOW_MIN:-10}"
nice_level="${SOAK_NICE:-0}"
out="${SOAK_OUT:-$(mktemp -d /tmp/reelhouse-soak.XXXXXX)}"
mkdir -p "$out"

target="${CARGO_TARGET_DIR:-target}"
if [[ -z "${REELHOUSE_BIN:-}" || -z "${REELHOUSE_LOAD_BIN:-}" ]]; then
  cargo build --release -q -p reelhouse -p reelhouse-load
fi
server_bin="${REELHOUSE_BIN:-$target/release/reelhouse}"
load_bin="${REELHOUSE_LOAD_BIN:-$target/release/reelhouse-load}"

for var in $(compgen -e); do
  case "$var" in DATABASE_URL|REDIS_URL|S3_*|REELHOUSE__*) unset "$var" ;; esac
done

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
server_pid="" sampler_pid=""
cleanup() {
  [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null || true
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

env REELHOUSE__RATE_LIMIT__ENABLED=false \
  REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD=true \
  REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_IP=1000000 \
  REELHOUSE__GRAPHQL__WS_MAX_SOCKETS_PER_USER=1000000 \
  REELHOUSE__GRAPHQL__WS_MAX_SUBSCRIPTIONS_PER_USER=1000000 \
  REELHOUSE__MEDIA__LADDER='[{lines=240,video_bitrate_kbps=300}]' \
  REELHOUSE__MEDIA__SPEED_PRESET=ultrafast \
  REELHOUSE__TELEMETRY__LEVEL=warn \
  nice -n "$nice_level" "$server_bin" serve --bind "127.0.0.1:$port" --data-dir "$out/data" >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
  curl -sf "$url/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "soak: the server died:" >&2; tail -20 "$out/server.log" >&2; exit 1; }
  sleep 0.2
done

# The sampler: epoch seconds, VmRSS KiB, RssAnon KiB, data dir KiB.
(
  echo "t,vmrss_kib,rssanon_kib,data_kib" >"$out/rss.csv"
  while kill -0 "$server_pid" 2>/dev/null; do
    status="$(cat "/proc/$server_pid/status" 2>/dev/null || true)"
    vm="$(awk '/^VmRSS:/ {print $2}' <<<"$status")"
    anon="$(awk '/^RssAnon:/ {print $2}' <<<"$status")"
    data="$(du -sk "$out/data" 2>/dev/null | cut -f1)"
    echo "$(date +%s),${vm:-0},${anon:-0},${data:-0}" >>"$out/rss.csv"
    sleep 10
  done
) &
sampler_pid=$!

echo "soak: $duration against $url (pid $server_pid), samples in $out/rss.csv" >&2
started="$(date -u +%FT%TZ)"
status=0
nice -n "$nice_level" "$load_bin" --target "$url" --server-pid "$server_pid" --json \
  --scenario soak --users "$users" --subscribers "$subscribers" --duration "$duration" \
  --ready-timeout 120s >"$out/report.out" 2>"$out/report.err" || status=$?
ended="$(date -u +%FT%TZ)"
head -n -1 "$out/report.out" >&2 || true
echo "soak: $started .. $ended, harness exit $status" >&2

python3 - "$out/rss.csv" "$window" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
window = int(sys.argv[2]) * 60
if not rows:
    sys.exit("soak: no RSS samples")
t0 = int(rows[0]["t"])
buckets = {}
for r in rows:
    buckets.setdefault((int(r["t"]) - t0) // window, []).append(r)
print(f"| minutes | VmRSS MiB min..max | RssAnon MiB min..max | data dir MiB |")
print("| --- | ---: | ---: | ---: |")
for k in sorted(buckets):
    b = buckets[k]
    vm = [int(r["vmrss_kib"]) / 1024 for r in b]
    an = [int(r["rssanon_kib"]) / 1024 for r in b]
    print(f"| {k*window//60}-{(k+1)*window//60} | {min(vm):.0f}..{max(vm):.0f} | {min(an):.0f}..{max(an):.0f} | {int(b[-1]['data_kib'])/1024:.0f} |")
PY
tail -n 1 "$out/report.out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
bad = {k: r[k] for k in ("errors", "lost_events", "duplicate_events") if r[k] != 0}
print("soak: report " + json.dumps({k: r.get(k) for k in ("requests", "videos_ready", "subscriptions", "events_received", "errors", "lost_events", "duplicate_events")}))
sys.exit(1 if bad else 0)
' || status=1
exit "$status"
