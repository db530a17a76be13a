#!/usr/bin/env bash
# Browser end-to-end tests of the web demo and of GraphiQL at GET /graphql
# (web-demo/e2e/*.test.mjs) in headless Debian Chromium, each against a freshly
# started real server:
#
#   embedded  SQLite + local disk, in-process bus and workers, no Redis
#   s3        PostgreSQL + Redis + S3 (s3s-fs) from scripts/test-services.sh,
#             with the transcode running in a separate `reelhouse worker`
#             process whose progress reaches the browser through Redis
#
#   scripts/test-web.sh               both
#   scripts/test-web.sh embedded|s3   one
#
# First builds the app (web-demo/build.sh, which type-checks the GraphQL
# operations against schema.graphql) and proves schema drift fails that check
# (web-demo/drift-check.mjs). Screenshots and measurements go to
# web-demo/test-artifacts/ (or $WEB_E2E_ARTIFACTS). Exits non-zero if any run failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

log() { printf 'test-web: %s\n' "$*" >&2; }

runs=("$@")
((${#runs[@]})) || runs=(embedded s3)

ARTIFACTS="${WEB_E2E_ARTIFACTS:-$REPO_ROOT/web-demo/test-artifacts}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/reelhouse-web-e2e.XXXXXX")"
declare -a PIDS=()
declare -a DROP_DATABASES=()
PSQL=""
ADMIN_PG_URL=""
STARTED_SERVICES=0
ADMIN_EMAIL="admin-e2e@example.com"
ADMIN_PASSWORD="admin e2e password $RANDOM$RANDOM"

# Stop the servers this script started (by their ids).
stop_servers() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

cleanup() {
    local db
    stop_servers
    for db in "${DROP_DATABASES[@]}"; do
        "$PSQL" -q "$ADMIN_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if ((STARTED_SERVICES)); then
        scripts/test-services.sh stop || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------ what it needs

scripts/bootstrap.sh --packages chromium python3 curl gstreamer1.0-tools gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
# Node.js >= 22 (scripts/node.sh) for the build and the tests.
node_bin="$(scripts/node.sh)"
export PATH="${node_bin%/*}:$PATH"
web-demo/build.sh
# The build type-checks every GraphQL operation against schema.graphql; prove that
# drift (a renamed field in the schema or in an operation, a removed enum value)
# still fails it (web-demo/drift-check.mjs).
log "schema drift must fail the web type check (npm run typecheck:drift)"
(cd web-demo && npm run --silent typecheck:drift)

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
log "building the server (cargo build -p reelhouse)"
cargo build -q -p reelhouse
BIN="$TARGET_DIR/debug/reelhouse"

# A 4 s 640x480 H.264/AAC clip (two ladder rungs: 480p and 360p; ~150 KB, which
# the browser uploads throttled to 64 KB/s so its progress bar is seen moving),
# and bytes that are no video.
CLIP="$WORK/test-pattern.mp4"
BAD="$WORK/holiday.mp4"
gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$CLIP" \
    videotestsrc num-buffers=100 pattern=ball background-color=0xff3070b0 \
    ! video/x-raw,format=I420,width=640,height=480,framerate=25/1 \
    ! x264enc speed-preset=ultrafast bitrate=1800 key-int-max=25 bframes=0 ! h264parse ! queue ! mux. \
    audiotestsrc num-buffers=188 samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
    ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. >/dev/null
# A 30 s clip for the admin test: long enough to cancel while it encodes.
LONG_CLIP="$WORK/long.mp4"
gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$LONG_CLIP" \
    videotestsrc num-buffers=750 pattern=smpte ! video/x-raw,format=I420,width=640,height=480,framerate=25/1 \
    ! x264enc speed-preset=ultrafast key-int-max=25 bframes=0 ! h264parse ! queue ! mux. >/dev/null
# A 60 s 720p clip of moving content for the playable-while-encoding test: its ladder
# (three rungs) and MP4 take long enough that the page can play it before READY.
# Embedded run only: its 720p MP4 is larger than one S3 part, and s3s-fs (the S3 of
# these tests) names a multipart upload's metadata file after the base64 of the key
# plus the upload id, which for an output key of ~120+ characters passes the 255-byte
# file-name limit (InternalError on CreateMultipartUpload). Real S3 has no such limit;
# the Rust runner test covers the growing playlist on S3 (postgres run).
EARLY_CLIP="$WORK/early.mp4"
gst-launch-1.0 -q mp4mux name=mux faststart=true ! filesink location="$EARLY_CLIP" \
    videotestsrc num-buffers=1500 pattern=smpte horizontal-speed=4 \
    ! video/x-raw,format=I420,width=1280,height=720,framerate=25/1 \
    ! x264enc speed-preset=ultrafast bitrate=3000 key-int-max=50 bframes=0 ! h264parse ! queue ! mux. \
    audiotestsrc num-buffers=2815 samplesperbuffer=1024 wave=sine ! audio/x-raw,rate=48000,channels=2 \
    ! audioconvert ! avenc_aac ! aacparse ! queue ! mux. >/dev/null
head -c 400000 /dev/urandom >"$BAD"
log "clip: $(stat -c %s "$CLIP") bytes; not-a-video: $(stat -c %s "$BAD") bytes"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() {
    local url="$1" pid="$2" logfile="$3" i
    for i in $(seq 1 300); do
        if curl -sf -o /dev/null "$url/ready"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "the server exited before it was ready; its log:"
            tail -n 40 "$logfile" >&2
            return 1
        fi
        sleep 0.2
    done
    log "the server was not ready after 60 s; its log:"
    tail -n 40 "$logfile" >&2
    return 1
}

# Settings common to both servers: access tokens that expire every 8 s, so the
# journey proves the app refreshes its session (and reconnects its WebSocket,
# which the server closes when the token expires) without the person noticing.
common_env=(
    REELHOUSE__AUTH__ACCESS_TOKEN_TTL_SECS=8
    REELHOUSE__TELEMETRY__FORMAT=json
    REELHOUSE__TELEMETRY__LEVEL=info
)

# run_e2e LABEL URL MAIL_DIRS [EARLY_CLIP]: the browser tests against URL; MAIL_DIRS (':'
# between several) is where that server's mails land as .eml files, read by the
# tests for the verification and reset links.
run_e2e() {
    local label="$1" url="$2" mail_dirs="$3" early_clip="${4:-}"
    log "browser tests ($label) against $url"
    (cd web-demo && REELHOUSE_URL="$url" E2E_MAIL_DIR="$mail_dirs" \
        E2E_CLIP="$CLIP" E2E_BAD_FILE="$BAD" E2E_LONG_CLIP="$LONG_CLIP" E2E_EARLY_CLIP="$early_clip" \
        E2E_ARTIFACTS="$ARTIFACTS" E2E_LABEL="$label" E2E_EXPECT_REFRESH=1 \
        E2E_ADMIN_EMAIL="$ADMIN_EMAIL" E2E_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        node --test --test-reporter=spec 'e2e/*.test.mjs')
}

run_embedded() {
    local port url data logfile pid
    port=$(free_port)
    url="http://127.0.0.1:$port"
    data="$WORK/embedded-data"
    logfile="$ARTIFACTS/embedded-server.log"
    env -u DATABASE_URL -u REDIS_URL -u S3_ENDPOINT -u S3_BUCKET "${common_env[@]}" \
        "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$data" >"$logfile" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$url" "$pid" "$logfile" || return 1
    env -u DATABASE_URL REELHOUSE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        "$BIN" create-admin --email "$ADMIN_EMAIL" --data-dir "$data" >/dev/null || return 1
    # No SMTP server configured: the server writes each mail under {data_dir}/mail/.
    run_e2e embedded "$url" "$data/mail" "$EARLY_CLIP"
}

find_psql() {
    local bindir
    if command -v psql >/dev/null 2>&1; then
        PSQL="$(command -v psql)"
        return
    fi
    for bindir in /usr/lib/postgresql/*/bin; do
        [[ -x "$bindir/psql" ]] && PSQL="$bindir/psql"
    done
    [[ -n "$PSQL" ]] || { log "psql not found"; return 1; }
}

run_s3() {
    if [[ -z "${REELHOUSE_TEST_PG_URL:-}" ]]; then
        STARTED_SERVICES=1
        scripts/test-services.sh start || return 1
        # shellcheck source=/dev/null
        source .test-services/env
    fi
    find_psql || return 1
    ADMIN_PG_URL="$REELHOUSE_TEST_PG_URL"
    local suffix db db_url port url logfile pid
    suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    db="reelhouse_web_$suffix"
    "$PSQL" -q "$ADMIN_PG_URL" -c "CREATE DATABASE $db" >/dev/null || return 1
    DROP_DATABASES+=("$db")
    db_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' \
        "$ADMIN_PG_URL" "$db")"
    port=$(free_port)
    url="http://127.0.0.1:$port"
    local -a env=(
        "${common_env[@]}"
        DATABASE_URL="$db_url"
        REDIS_URL="$REELHOUSE_TEST_REDIS_URL"
        REELHOUSE__REDIS__KEY_PREFIX="reelhouse-web-$suffix:"
        S3_ENDPOINT="$REELHOUSE_TEST_S3_ENDPOINT"
        S3_BUCKET="$REELHOUSE_TEST_S3_BUCKET"
        S3_REGION="$REELHOUSE_TEST_S3_REGION"
        S3_ACCESS_KEY_ID="$REELHOUSE_TEST_S3_ACCESS_KEY_ID"
        S3_SECRET_ACCESS_KEY="$REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"
        # As short as the Rust tests' prefix: s3s-fs names each multipart upload's
        # metadata file after the base64 of its key plus the upload id, and with a
        # longer prefix a tus upload's key passed the 255-byte file-name limit
        # (InternalError on CreateMultipartUpload). Real S3 takes 1024-byte keys.
        REELHOUSE__STORAGE__S3__KEY_PREFIX="w$suffix/"
        REELHOUSE__AUTH__JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
        # GraphiQL and introspection are off by default in distributed mode;
        # e2e/graphiql.test.mjs tests the page against this server too.
        REELHOUSE__GRAPHQL__PLAYGROUND=true
        REELHOUSE__GRAPHQL__INTROSPECTION=true
    )
    # Real SMTP when the test services run a sink (scripts/test-services.sh
    # writes SMTP_URL and SMTP_SINK_DIR): the tests read the mails it received.
    # Without one, mail is a job run by either process, and each writes its
    # .eml files under its own data dir.
    local mail_dirs="$WORK/s3-data/mail:$WORK/s3-worker/mail"
    if [[ -n "${SMTP_URL:-}" && -n "${SMTP_SINK_DIR:-}" ]]; then
        env+=(REELHOUSE__MAIL__SMTP_URL="$SMTP_URL")
        mail_dirs="$SMTP_SINK_DIR"
    fi
    logfile="$ARTIFACTS/s3-server.log"
    env "${env[@]}" REELHOUSE__WORKERS__EMBEDDED=false \
        "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$WORK/s3-data" >"$logfile" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$url" "$pid" "$logfile" || return 1
    env "${env[@]}" "$BIN" worker --data-dir "$WORK/s3-worker" >"$ARTIFACTS/s3-worker.log" 2>&1 &
    PIDS+=("$!")
    env "${env[@]}" REELHOUSE_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
        "$BIN" create-admin --email "$ADMIN_EMAIL" --data-dir "$WORK/s3-data" >/dev/null || return 1
    run_e2e s3 "$url" "$mail_dirs"
}

mkdir -p "$ARTIFACTS"
declare -A outcome=()
status=0
for run in "${runs[@]}"; do
    started=$SECONDS
    rm -f "$ARTIFACTS/$run"-*
    case "$run" in
        embedded) fn=run_embedded ;;
        s3) fn=run_s3 ;;
        *) log "unknown run $run (embedded or s3)"; exit 2 ;;
    esac
    if "$fn"; then
        outcome[$run]="passed in $((SECONDS - started)) s"
    else
        outcome[$run]="FAILED after $((SECONDS - started)) s"
        status=1
    fi
    stop_servers
done

log "artifacts (screenshots, codecs, server logs): $ARTIFACTS"
for run in "${runs[@]}"; do
    log "$run: ${outcome[$run]}"
done
exit "$status"
