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
# shellcheck source=lib/live-server.sh
source scripts/lib/live-server.sh
npm_cache_install "$cache" "tus-js-client@$TUS_JS_VERSION"
cp scripts/tus-js/tus.mjs "$cache/tus.mjs"
live_server_init

# A 2 s 320x240 H.264/AAC clip (~65 KB, one ladder rung).
clip="$work/clip.mp4"
gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$clip" \
  videotestsrc num-buffers=50 pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=25/1 \
  ! x264enc speed-preset=ultrafast bitrate=1500 key-int-max=25 bframes=0 ! h264parse ! queue ! mux. \
  audiotestsrc num-buffers=94 samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
  ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. >/dev/null
log "clip: $(stat -c %s "$clip") bytes"

# run NAME [VAR=VALUE...]: start a server with these settings, upload to it, stop it.
failures=0
run() {
  local name="$1"
  shift
  if ! start_server "$name" "$@"; then
    failures=$((failures + 1))
    return
  fi
  if ! node "$cache/tus.mjs" "$url" "$clip" "$name"; then
    log "$name: server log tail:"
    tail -30 "$logfile" >&2
    failures=$((failures + 1))
  fi
  stop_server
}

run embedded

if postgres_s3_settings tusjs; then
  run postgres-s3 "${pg_s3_env[@]}"
elif (($? == 2)); then
  failures=$((failures + 1))
fi

if ((failures)); then
  log "$failures run(s) failed"
  exit 1
fi
log "every tus extension works with tus-js-client"
