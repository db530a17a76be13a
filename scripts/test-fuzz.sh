#!/usr/bin/env bash
# Fuzzing of every entry point (part of `make test`; `make fuzz` runs a long version):
# `reelhouse-fuzz` (load-tests/src/bin/fuzz.rs) against a live server — GraphQL
# documents generated from schema.graphql over HTTP POST, GET and
# graphql-transport-ws (anonymous and signed in), random tus sequences, random
# /media and /storage requests against a READY private video — first an embedded
# server (SQLite, local disk), then, when the test services are up
# (.test-services/env, as test.sh sources it), a PostgreSQL + Redis + S3 one.
#
# Fails on any 5xx (a 503 with Retry-After excepted), any untyped error, any broken
# tus rule, any byte served without a valid signature, a panic in the server log,
# a server that no longer answers, or RSS grown by more than
# REELHOUSE_FUZZ_RSS_BOUND_MIB (192) over the run.
#
# REELHOUSE_FUZZ_SCALE   multiply every case count (default 1: 10,000 GraphQL
#                        documents on the embedded server; `make fuzz` uses 20)
# REELHOUSE_FUZZ_SEED    replay a run (the seed is printed either way)
# REELHOUSE_FUZZ_KEEP    keep the servers' logs and findings in this dir
# REELHOUSE_BIN, REELHOUSE_FUZZ_BIN: use these binaries instead of building them.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test-fuzz: %s\n' "$*" >&2; }

scale="${REELHOUSE_FUZZ_SCALE:-1}"
if ! [[ "$scale" =~ ^[1-9][0-9]*$ ]]; then
  log "REELHOUSE_FUZZ_SCALE must be a positive integer, not '$scale'"
  exit 2
fi
seed="${REELHOUSE_FUZZ_SEED:-$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')}"
# Since big freed buffers go back to the system (server/src/memory.rs,
# docs/BENCHMARKS.md "Fuzzing and RSS") the short run grows the embedded server's RSS
# by about 15 MiB for the GraphQL cases alone and 114 MiB for the whole mix (tus and
# /media included, not broken down yet), the PostgreSQL + S3 one by 7 MiB.
rss_bound="${REELHOUSE_FUZZ_RSS_BOUND_MIB:-192}"

if ! command -v gst-launch-1.0 >/dev/null 2>&1; then
  scripts/bootstrap.sh --packages gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
fi
target_dir="${CARGO_TARGET_DIR:-target}"
if [[ -z "${REELHOUSE_FUZZ_BIN:-}" ]]; then
  cargo build -q -p reelhouse-load --bin reelhouse-fuzz
fi
fuzz_bin="${REELHOUSE_FUZZ_BIN:-$target_dir/debug/reelhouse-fuzz}"
# shellcheck source=lib/live-server.sh
source scripts/lib/live-server.sh
live_server_init

# The fuzzer must reach the resolvers, not the rate limiter: every policy is raised
# far above what the run sends (the limiter still runs and charges every request).
limits=()
for policy in api auth auth_ip upload transcode webhook webhook_replay views; do
  limits+=(
    "REELHOUSE__RATE_LIMIT__POLICIES__${policy^^}__LIMIT=100000000"
    "REELHOUSE__RATE_LIMIT__POLICIES__${policy^^}__PERIOD_SECS=1"
    "REELHOUSE__RATE_LIMIT__POLICIES__${policy^^}__BURST=100000000"
  )
done
common=(
  "${limits[@]}"
  REELHOUSE__AUTH__LOGIN_BACKOFF_AFTER_FAILURES=1000000000
  'REELHOUSE__MEDIA__LADDER=[{lines=240,video_bitrate_kbps=300}]'
  REELHOUSE__MEDIA__SPEED_PRESET=ultrafast
  REELHOUSE__TELEMETRY__LEVEL=warn
  RUST_BACKTRACE=1
)

keep="${REELHOUSE_FUZZ_KEEP:-}"
[[ -n "$keep" ]] && mkdir -p "$keep"

# fuzz NAME GRAPHQL TUS MEDIA [VAR=VALUE...]: start a server, fuzz it, check its log.
failures=0
declare -a lines=()
fuzz() {
  local name="$1" graphql="$2" tus="$3" media="$4"
  shift 4
  if ! start_server "$name" "${common[@]}" "$@"; then
    failures=$((failures + 1))
    return
  fi
  local report="$work/report-$name.json" ok=1
  log "$name: $graphql GraphQL documents, $tus tus sequences, $media /media and /storage requests (seed $seed)"
  if ! REELHOUSE_FUZZ_FINDINGS="${keep:-$work}/findings-$name" "$fuzz_bin" --target "$url" --server-pid "$pid" \
    --schema schema.graphql --corpus server/tests/fuzz-corpus --seed "$seed" --graphql-cases "$graphql" --tus-sequences "$tus" \
    --media-cases "$media" --rss-bound-mib "$rss_bound" --report "$report"; then
    ok=0
  fi
  # A panic anywhere in the server (a resolver, an actor, a background loop) fails
  # the run even when it was caught and answered.
  if grep -n -i -E 'panicked|panic occurred' "$logfile" >&2; then
    log "$name: the server log shows a panic (above)"
    ok=0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$name: the server died"
    ok=0
  fi
  if [[ -f "$report" ]]; then
    lines+=("$name: $(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]["answers"]
def fmt(prefix):
    out = {}
    for target, by in s.items():
        if target.startswith(prefix):
            for status, n in by.items():
                out[status] = out.get(status, 0) + n
    return ", ".join(str(k) + ": " + str(v) for k, v in sorted(out.items()))
docs, failures, secs = r["graphql_documents"], len(r["failures"]), round(r["seconds"])
rss = str(r["rss_start_kib"]) + " -> " + str(r["rss_end_kib"]) + " KiB"
print(f"{docs} GraphQL documents ({fmt(chr(103) + chr(114) + chr(97) + chr(112) + chr(104))}); tus ({fmt(chr(116) + chr(117) + chr(115))}); media/storage ({fmt(chr(109))}; {fmt(chr(115) + chr(116))}); RSS {rss}; {failures} failure(s) in {secs} s")
' "$report" || true)")
  fi
  [[ -n "$keep" ]] && cp "$logfile" "$report" "$keep/" 2>/dev/null
  if ((!ok)); then
    log "$name: server log tail:"
    tail -30 "$logfile" >&2
    failures=$((failures + 1))
  fi
  stop_server
}

fuzz embedded $((10000 * scale)) $((300 * scale)) $((3000 * scale))

if postgres_s3_settings fuzz; then
  fuzz postgres-s3 $((2000 * scale)) $((60 * scale)) $((600 * scale)) "${pg_s3_env[@]}"
elif (($? == 2)); then
  failures=$((failures + 1))
fi

for line in "${lines[@]}"; do log "$line"; done
if ((failures)); then
  log "$failures run(s) failed (seed $seed: REELHOUSE_FUZZ_SEED=$seed scripts/test-fuzz.sh replays them)"
  exit 1
fi
log "every rule held (seed $seed)"
