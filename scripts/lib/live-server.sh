# Sourced (not run) by the scripts that drive a live `reelhouse serve` with a stock
# client: scripts/test-graphql-http.sh, scripts/test-tus-js.sh. The caller defines
# log() and runs from the repository root.
#
#   npm_cache_install DIR PKG@VER...   install npm packages into DIR once per pin list
#   live_server_init                   $bin (REELHOUSE_BIN or a fresh debug build),
#                                      $work (a temp dir), cleanup on EXIT
#   start_server NAME [VAR=VALUE...]   serve on a free port with these settings; sets
#                                      $url, $pid, $logfile; returns 1 (logged) if it
#                                      does not answer /health
#   stop_server                        stop the server start_server last started
#   postgres_s3_settings TAG           a fresh database: fills the array pg_s3_env with
#                                      the settings of a PostgreSQL + Redis + S3 server
#                                      (returns 1 when the test services are not up)

npm_cache_install() {
  local dir="$1" stamp
  shift
  stamp="$dir/.installed-$(printf '%s-' "$@" | tr '/@' '__')"
  [[ -f "$stamp" ]] && return 0
  log "installing $* into $dir"
  mkdir -p "$dir"
  [[ -f "$dir/package.json" ]] || printf '{"name":"reelhouse-%s","private":true,"type":"module"}\n' "${dir##*/}" >"$dir/package.json"
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@")
  touch "$stamp"
}

live_server_init() {
  local target="${CARGO_TARGET_DIR:-target}"
  if [[ -z "${REELHOUSE_BIN:-}" ]]; then
    cargo build -q -p reelhouse
  fi
  bin="${REELHOUSE_BIN:-$target/debug/reelhouse}"
  work="$(mktemp -d)"
  live_pids=()
  live_dbs=()
  PSQL=""
  trap live_server_cleanup EXIT
}

live_server_cleanup() {
  local p db
  for p in "${live_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${live_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for db in "${live_dbs[@]}"; do
    "$PSQL" -q "$REELHOUSE_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_server() {
  local name="$1" port up=0
  shift
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  logfile="$work/server-$name.log"
  # Stock clients register and upload at once: no mailed link to follow here.
  env -u DATABASE_URL -u REDIS_URL -u S3_ENDPOINT -u S3_BUCKET REELHOUSE__TELEMETRY__LEVEL=warn \
    REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD=true "$@" \
    "$bin" serve --bind "127.0.0.1:$port" --data-dir "$work/data-$name" >"$logfile" 2>&1 &
  pid=$!
  live_pids+=("$pid")
  for _ in $(seq 1 150); do
    if curl -sf "$url/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if ((!up)); then
    log "$name: the server did not start:"
    tail -20 "$logfile" >&2
    return 1
  fi
}

stop_server() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

postgres_s3_settings() {
  local tag="$1" suffix db db_url bindir
  pg_s3_env=()
  if [[ -z "${REELHOUSE_TEST_PG_URL:-}" ]]; then
    log "no test services (.test-services/env not sourced): PostgreSQL + Redis + S3 backend not run"
    return 1
  fi
  PSQL="$(command -v psql || true)"
  for bindir in /usr/lib/postgresql/*/bin; do [[ -z "$PSQL" && -x "$bindir/psql" ]] && PSQL="$bindir/psql"; done
  if [[ -z "$PSQL" ]]; then
    log "psql not found: cannot run the PostgreSQL + Redis + S3 backend"
    return 2
  fi
  suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  db="reelhouse_${tag}_$suffix"
  "$PSQL" -q "$REELHOUSE_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null
  live_dbs+=("$db")
  db_url="$(python3 -c 'import sys, urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' \
    "$REELHOUSE_TEST_PG_URL" "$db")"
  # A short S3 prefix: s3s-fs names a multipart upload's metadata file after the key.
  pg_s3_env=(
    DATABASE_URL="$db_url"
    REDIS_URL="$REELHOUSE_TEST_REDIS_URL"
    REELHOUSE__REDIS__KEY_PREFIX="reelhouse-$tag-$suffix:"
    S3_ENDPOINT="$REELHOUSE_TEST_S3_ENDPOINT"
    S3_BUCKET="$REELHOUSE_TEST_S3_BUCKET"
    S3_REGION="$REELHOUSE_TEST_S3_REGION"
    S3_ACCESS_KEY_ID="$REELHOUSE_TEST_S3_ACCESS_KEY_ID"
    S3_SECRET_ACCESS_KEY="$REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"
    REELHOUSE__STORAGE__S3__KEY_PREFIX="${tag:0:2}${suffix:0:8}/"
    REELHOUSE__AUTH__JWT_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  )
}
