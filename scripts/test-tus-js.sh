#!/usr/bin/env bash
# tus with the stock client (part of `make test`): tus-js-client in Node uploads a
# real clip to a live server once per tus extension — parallelUploads
# (concatenation), uploadDataDuringCreation, uploadLengthDeferred,
# overridePatchMethod, and a resume whose HEAD shows the metadata — each video
# ending READY (scripts/tus-js/tus.mjs). Runs against an embedded server (SQLite,
# local disk) and, when the test services are up (.test-services/env, as test.sh
# sources it), a PostgreSQL + Redis + S3 one.
#
# The npm package goes to a cache dir (TUS_JS_CACHE, default
# ~/.cache/reelhouse/tus-js), installed once per version pin (the web demo's).
# REELHOUSE_BIN: use this server binary instead of building it.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test-tus-js: %s\n' "$*" >&2; }

TUS_JS_VERSION="${TUS_JS_VERSION:-4.3.1}"

# Node.js >= 22 (scripts/node.sh); npm runs on it too.
node_bin="$(scripts/node.sh)"
export PATH="${node_bin%/*}:$PATH"
if ! command -v gst-launch-1.0 >/dev/null 2>&1; then
  scripts/bootstrap.sh --packages gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
fi
cache="${TUS_JS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse/tus-js}"
stamp="$cache/.installed-$TUS_JS_VERSION"
if [[ ! -f "$stamp" ]]; then
  log "installing tus-js-client@$TUS_JS_VERSION into $cache"
  mkdir -p "$cache"
  [[ -f "$cache/package.json" ]] || printf '{"name":"reelhouse-tus-js","private":true,"type":"module"}\n' >"$cache/package.json"
  (cd "$cache" && npm install --no-audit --no-fund --loglevel=error "tus-js-client@$TUS_JS_VERSION")
  touch "$stamp"
fi
cp scripts/tus-js/tus.mjs "$cache/tus.mjs"

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

# A 2 s 320x240 H.264/AAC clip (~65 KB, one ladder rung).
clip="$work/clip.mp4"
gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$clip" \
  videotestsrc num-buffers=50 pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 \
  ! x264enc speed-preset=ultrafast bitrate=1500 key-int-max=25 bframes=0 ! h264parse ! queue ! mux. \
  audiotestsrc num-buffers=94 samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
  ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. >/dev/null
log "clip: $(stat -c %s "$clip") bytes"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run NAME [VAR=VALUE...]: start a server with these settings, upload to it, stop it.
failures=0
run() {
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
  if ! node "$cache/tus.mjs" "$url" "$clip" "$name"; then
    log "$name: server log tail:"
    tail -30 "$logfile" >&2
    failures=$((failures + 1))
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run embedded

if [[ -n "${REELHOUSE_TEST_PG_URL:-}" ]]; then
  PSQL="$(command -v psql || true)"
  for bindir in /usr/lib/postgresql/*/bin; do [[ -z "$PSQL" && -x "$bindir/psql" ]] && PSQL="$bindir/psql"; done
  if [[ -z "$PSQL" ]]; then
    log "psql not found: cannot test the PostgreSQL + S3 backend"
    failures=$((failures + 1))
  else
    suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    drop_db="reelhouse_tusjs_$suffix"
    "$PSQL" -q "$REELHOUSE_TEST_PG_URL" -c "CREATE DATABASE $drop_db" >/dev/null
    db_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' \
      "$REELHOUSE_TEST_PG_URL" "$drop_db")"
    run postgres-s3 \
      DATABASE_URL="$db_url" \
      REDIS_URL="$REELHOUSE_TEST_REDIS_URL" \
      REELHOUSE__REDIS__KEY_PREFIX="reelhouse-tusjs-$suffix:" \
      S3_ENDPOINT="$REELHOUSE_TEST_S3_ENDPOINT" \
      S3_BUCKET="$REELHOUSE_TEST_S3_BUCKET" \
      S3_REGION="$REELHOUSE_TEST_S3_REGION" \
      S3_ACCESS_KEY_ID="$REELHOUSE_TEST_S3_ACCESS_KEY_ID" \
      S3_SECRET_ACCESS_KEY="$REELHOUSE_TEST_S3_SECRET_ACCESS_KEY" \
      REELHOUSE__STORAGE__S3__KEY_PREFIX="tj${suffix:0:8}/" \
      REELHOUSE__AUTH__JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  fi
else
  log "no test services (.test-services/env not sourced): PostgreSQL + S3 backend not tested"
fi

if ((failures)); then
  log "$failures run(s) failed"
  exit 1
fi
log "every tus extension works with tus-js-client"
