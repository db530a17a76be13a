#!/usr/bin/env bash
# Makes PostgreSQL, Redis and an S3-compatible server available to the test
# suite, and writes their coordinates to .test-services/env (export lines).
#
#   scripts/test-services.sh start    start what is missing, write the env file
#   scripts/test-services.sh stop     stop only what `start` started
#   scripts/test-services.sh status   show the env file and what we own
#
# PostgreSQL: $DATABASE_URL, else postgres@127.0.0.1:5432 (trust auth), else a
#   throwaway cluster on a free port. REELHOUSE_TEST_FORCE_OWN_PG=1 forces the
#   throwaway cluster.
# Redis: $REDIS_URL, else 127.0.0.1:6379, else a throwaway redis-server on a
#   free port. REELHOUSE_TEST_FORCE_OWN_REDIS=1 forces the throwaway server.
# S3: always our own s3s-fs (installed with cargo into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse-tools) with bucket reelhouse-test.
# SMTP: always our own sink (scripts/smtp-sink.py; aiosmtpd, installed with pip
#   when missing) requiring AUTH; the env file gets SMTP_URL (credentials in the
#   userinfo) and SMTP_SINK_DIR, where each received mail is one .eml file.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$REPO_ROOT/.test-services"
ENV_FILE="$STATE_DIR/env"
BOOTSTRAP="$REPO_ROOT/scripts/bootstrap.sh"

TOOLS_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/reelhouse-tools"
S3S_VERSION="0.14.1"
S3S_BIN="$TOOLS_ROOT/bin/s3s-fs"

S3_BUCKET="reelhouse-test"
S3_REGION="us-east-1"
S3_ACCESS_KEY_ID="reelhouse-test-access-key"
S3_SECRET_ACCESS_KEY="reelhouse-test-secret-key"

# SMTP sink (scripts/smtp-sink.py, aiosmtpd): requires AUTH with these.
SMTP_USER="reelhouse-test-smtp"
SMTP_PASSWORD="reelhouse-test-smtp-password"

log() { printf 'test-services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! port_in_use "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    die "no free TCP port found"
}

# Is $1 a live process whose command line contains $2?
pid_is() {
    local pid="$1" needle="$2"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

# Sends TERM, waits up to 10 s, then KILL.
stop_pid() {
    local pid="$1" needle="$2" _
    pid_is "$pid" "$needle" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        pid_is "$pid" "$needle" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# One `export NAME=value` line, quoted only when the value needs it.
export_line() {
    local name="$1" value="$2"
    if [[ "$value" =~ ^[A-Za-z0-9_./:@%+=,-]*$ ]]; then
        printf 'export %s=%s\n' "$name" "$value"
    else
        printf 'export %s=%q\n' "$name" "$value"
    fi
}

# Saves NAME=value pairs (shell-quoted) into a state file we source later.
save_state() {
    local file="$1"
    shift
    : >"$file"
    while (($# > 0)); do
        printf '%s=%q\n' "$1" "$2" >>"$file"
        shift 2
    done
}

need_packages() { "$BOOTSTRAP" --packages "$@"; }

show_log_tail() {
    if [[ -f "$1" ]]; then
        log "last lines of $1:"
        tail -n 20 "$1" >&2 || true
    fi
}

# ------------------------------------------------------------- PostgreSQL

PG_URL=""
PSQL=""

pg_bin_dir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)
    [[ -n "$d" ]] && dirname "$d"
}

pg_answers() {
    local url="$1"
    PGCONNECT_TIMEOUT=3 "$PSQL" "$url" -Atqw -c 'select 1' >/dev/null 2>&1
}

find_psql() {
    local bindir
    if command -v psql >/dev/null 2>&1; then
        PSQL="$(command -v psql)"
    elif bindir=$(pg_bin_dir) && [[ -x "$bindir/psql" ]]; then
        PSQL="$bindir/psql"
    else
        need_packages postgresql-client
        PSQL="$(command -v psql)"
    fi
}

# Runs a command as the unprivileged owner of the throwaway cluster, from $2.
as_pg_user() {
    local user="$1" dir="$2"
    shift 2
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd "$dir" && runuser -u "$user" -- "$@")
    else
        (cd "$dir" && "$@")
    fi
}

start_own_pg() {
    local bindir user dir port
    if ! bindir=$(pg_bin_dir); then
        need_packages postgresql
        bindir=$(pg_bin_dir) || die "initdb not found after installing postgresql"
    fi
    if [[ "$(id -u)" -eq 0 ]]; then
        if id -u postgres >/dev/null 2>&1; then user=postgres; else user=nobody; fi
    else
        user="$(id -un)"
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/reelhouse-pg.XXXXXX")
    chmod 700 "$dir"
    [[ "$(id -u)" -eq 0 ]] && chown "$user" "$dir"
    save_state "$STATE_DIR/pg.state" PG_DIR "$dir" PG_BINDIR "$bindir" PG_RUN_AS "$user"

    as_pg_user "$user" "$dir" "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
        -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
        { show_log_tail "$dir/initdb.log"; die "initdb failed"; }

    local attempt
    for attempt in 1 2 3; do
        port=$(free_port)
        if as_pg_user "$user" "$dir" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
            -w -t 60 -s start -o "-p $port -k $dir -c listen_addresses=127.0.0.1 \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            >/dev/null 2>&1; then
            PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
            PSQL="$bindir/psql"
            log "started PostgreSQL ($(basename "$(dirname "$bindir")")) on 127.0.0.1:$port, data in $dir"
            return 0
        fi
        log "PostgreSQL did not start on port $port (attempt $attempt)"
    done
    show_log_tail "$dir/postgres.log"
    die "could not start a throwaway PostgreSQL"
}

stop_own_pg() {
    local state="$STATE_DIR/pg.state" PG_DIR="" PG_BINDIR="" PG_RUN_AS=""
    [[ -f "$state" ]] || return 0
    # shellcheck disable=SC1090
    source "$state"
    if [[ -n "$PG_DIR" && -d "$PG_DIR" ]]; then
        if [[ -f "$PG_DIR/data/postmaster.pid" ]]; then
            as_pg_user "$PG_RUN_AS" "$PG_DIR" "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" \
                -m fast -w -s stop >/dev/null 2>&1 || log "pg_ctl stop failed (continuing)"
        fi
        rm -rf -- "$PG_DIR"
        log "stopped throwaway PostgreSQL ($PG_DIR)"
    fi
    rm -f -- "$state"
}

setup_pg() {
    find_psql
    if [[ "${REELHOUSE_TEST_FORCE_OWN_PG:-}" == 1 ]]; then
        start_own_pg
    elif [[ -n "${DATABASE_URL:-}" ]]; then
        PG_URL="$DATABASE_URL"
        pg_answers "$PG_URL" || die "DATABASE_URL is set but PostgreSQL does not answer there"
        log "PostgreSQL: using \$DATABASE_URL"
    else
        local url="postgres://postgres@127.0.0.1:5432/postgres"
        if { ! command -v pg_isready >/dev/null 2>&1 ||
            pg_isready -q -h 127.0.0.1 -p 5432 -t 3; } && pg_answers "$url"; then
            PG_URL="$url"
            log "PostgreSQL: using 127.0.0.1:5432"
        else
            start_own_pg
        fi
    fi
    drop_stale_databases
}

# Drops reelhouse_test_* databases left behind by earlier runs: only those
# nobody is connected to and (when we may read file times) older than 2 min.
drop_stale_databases() {
    local base="select datname from pg_database d
        where left(datname, 15) = 'reelhouse_test_'
          and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)"
    local aged="$base and (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification
        < now() - interval '2 minutes'"
    local names name dropped=0
    names=$("$PSQL" "$PG_URL" -Atqw -v ON_ERROR_STOP=1 -c "$aged" 2>/dev/null) ||
        names=$("$PSQL" "$PG_URL" -Atqw -v ON_ERROR_STOP=1 -c "$base" 2>/dev/null) ||
        { log "could not list stale test databases (continuing)"; return 0; }
    while IFS= read -r name; do
        [[ "$name" =~ ^reelhouse_test_[A-Za-z0-9_]+$ ]] || continue
        if "$PSQL" "$PG_URL" -Atqw -c "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1; then
            dropped=$((dropped + 1))
        fi
    done <<<"$names"
    ((dropped == 0)) || log "dropped $dropped stale test database(s)"
}

# ------------------------------------------------------------------ Redis

REDIS_URL_OUT=""
REDIS_SERVER_BIN=""

redis_ping() {
    local host="$1" port="$2" reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply=$(timeout 3 redis-cli -h "$host" -p "$port" ping 2>/dev/null) || return 1
    else
        # shellcheck disable=SC2016 # $0/$1 expand in the inner shell
        reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 &&
            IFS= read -r line <&3 && printf "%s" "$line"' "$host" "$port" 2>/dev/null) || return 1
        reply="${reply#+}"
        reply="${reply%$'\r'}"
    fi
    [[ "$reply" == PONG ]]
}

find_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1; then
        need_packages redis-server
    fi
    # Not resolved through symlinks: on Debian redis-server is a link to
    # redis-check-rdb, which picks its role from argv[0].
    REDIS_SERVER_BIN="$(command -v redis-server)" || die "redis-server not found after install"
    [[ "$REDIS_SERVER_BIN" == /* ]] || REDIS_SERVER_BIN="$PWD/$REDIS_SERVER_BIN"
}

start_own_redis() {
    local dir port attempt pid
    dir=$(mktemp -d "${TMPDIR:-/tmp}/reelhouse-redis.XXXXXX")
    save_state "$STATE_DIR/redis.state" REDIS_DIR "$dir" REDIS_PID ""
    for attempt in 1 2 3; do
        port=$(free_port)
        rm -f -- "$dir/redis.pid"
        "$REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
            --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" \
            --logfile "$dir/redis.log" >/dev/null 2>&1 || true
        local _
        for _ in $(seq 1 50); do
            if redis_ping 127.0.0.1 "$port"; then
                pid=""
                for _ in $(seq 1 20); do
                    [[ -s "$dir/redis.pid" ]] && break
                    sleep 0.1
                done
                pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
                save_state "$STATE_DIR/redis.state" REDIS_DIR "$dir" REDIS_PID "$pid"
                REDIS_URL_OUT="redis://127.0.0.1:$port"
                log "started redis-server on 127.0.0.1:$port (pid $pid), dir $dir"
                return 0
            fi
            sleep 0.1
        done
        log "redis-server did not answer on port $port (attempt $attempt)"
    done
    show_log_tail "$dir/redis.log"
    die "could not start a throwaway redis-server"
}

stop_own_redis() {
    local state="$STATE_DIR/redis.state" REDIS_DIR="" REDIS_PID=""
    [[ -f "$state" ]] || return 0
    # shellcheck disable=SC1090
    source "$state"
    if [[ -z "$REDIS_PID" && -n "$REDIS_DIR" && -s "$REDIS_DIR/redis.pid" ]]; then
        REDIS_PID=$(cat "$REDIS_DIR/redis.pid")
    fi
    [[ -n "$REDIS_PID" ]] && stop_pid "$REDIS_PID" redis-server
    if [[ -n "$REDIS_DIR" && -d "$REDIS_DIR" ]]; then
        rm -rf -- "$REDIS_DIR"
        log "stopped throwaway redis-server ($REDIS_DIR)"
    fi
    rm -f -- "$state"
}

setup_redis() {
    find_redis_server
    if [[ "${REELHOUSE_TEST_FORCE_OWN_REDIS:-}" == 1 ]]; then
        start_own_redis
    elif [[ -n "${REDIS_URL:-}" ]]; then
        REDIS_URL_OUT="$REDIS_URL"
        log "Redis: using \$REDIS_URL"
    elif redis_ping 127.0.0.1 6379; then
        REDIS_URL_OUT="redis://127.0.0.1:6379"
        log "Redis: using 127.0.0.1:6379"
    else
        start_own_redis
    fi
}

# --------------------------------------------------------------------- S3

S3_ENDPOINT=""

install_s3s() {
    if [[ -x "$S3S_BIN" ]] && "$S3S_BIN" --version 2>/dev/null | grep -qF "$S3S_VERSION"; then
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install s3s-fs (run scripts/bootstrap.sh)"
    mkdir -p "$TOOLS_ROOT"
    log "installing s3s-fs $S3S_VERSION into $TOOLS_ROOT (one-time, takes a few minutes)"
    (
        # Serialise concurrent installs on one machine.
        if command -v flock >/dev/null 2>&1; then
            exec 9>"$TOOLS_ROOT/install.lock"
            flock 9
        fi
        if [[ -x "$S3S_BIN" ]] && "$S3S_BIN" --version 2>/dev/null | grep -qF "$S3S_VERSION"; then
            exit 0
        fi
        CARGO_TARGET_DIR="$TOOLS_ROOT/build" cargo install s3s-fs --version "$S3S_VERSION" \
            --features binary --locked --force --root "$TOOLS_ROOT" >&2
    )
    [[ -x "$S3S_BIN" ]] || die "s3s-fs install failed"
}

# curl signs with SigV4 but (7.88) does not send x-amz-content-sha256, which
# s3s-fs requires; UNSIGNED-PAYLOAD is fine for empty-bodied probes.
s3_curl() {
    curl -sS --max-time 5 --aws-sigv4 "aws:amz:$S3_REGION:s3" \
        --user "$S3_ACCESS_KEY_ID:$S3_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

start_own_s3() {
    if ! command -v curl >/dev/null 2>&1; then
        need_packages curl ca-certificates
    fi
    install_s3s
    local dir port attempt pid code _
    dir=$(mktemp -d "${TMPDIR:-/tmp}/reelhouse-s3.XXXXXX")
    mkdir -p "$dir/root/$S3_BUCKET" # an s3s-fs bucket is a directory under its root
    save_state "$STATE_DIR/s3.state" S3_DIR "$dir" S3_PID ""
    for attempt in 1 2 3; do
        port=$(free_port)
        setsid "$S3S_BIN" --host 127.0.0.1 --port "$port" \
            --access-key "$S3_ACCESS_KEY_ID" --secret-key "$S3_SECRET_ACCESS_KEY" \
            "$dir/root" </dev/null >"$dir/s3s-fs.log" 2>&1 &
        pid=$!
        save_state "$STATE_DIR/s3.state" S3_DIR "$dir" S3_PID "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            # A signed HeadBucket: proves the server is up, auth works and the bucket exists.
            code=$(s3_curl -o /dev/null -w '%{http_code}' -I \
                "http://127.0.0.1:$port/$S3_BUCKET" 2>/dev/null || true)
            if [[ "$code" == 200 ]]; then
                S3_ENDPOINT="http://127.0.0.1:$port"
                log "started s3s-fs on 127.0.0.1:$port (pid $pid), data in $dir/root"
                return 0
            elif [[ -n "$code" && "$code" != 000 ]]; then
                show_log_tail "$dir/s3s-fs.log"
                die "s3s-fs answered HeadBucket $S3_BUCKET with HTTP $code"
            fi
            sleep 0.1
        done
        stop_pid "$pid" s3s-fs
        log "s3s-fs did not answer on port $port (attempt $attempt, last HTTP status ${code:-none})"
    done
    show_log_tail "$dir/s3s-fs.log"
    die "could not start s3s-fs"
}

stop_own_s3() {
    local state="$STATE_DIR/s3.state" S3_DIR="" S3_PID=""
    [[ -f "$state" ]] || return 0
    # shellcheck disable=SC1090
    source "$state"
    [[ -n "$S3_PID" ]] && stop_pid "$S3_PID" s3s-fs
    if [[ -n "$S3_DIR" && -d "$S3_DIR" ]]; then
        rm -rf -- "$S3_DIR"
        log "stopped s3s-fs ($S3_DIR)"
    fi
    rm -f -- "$state"
}

# ---------------------------------------------------------------- SMTP sink

install_aiosmtpd() {
    python3 -c 'import aiosmtpd' 2>/dev/null && return 0
    command -v python3 >/dev/null 2>&1 || need_packages python3 python3-pip
    log "installing aiosmtpd with pip (one-time)"
    python3 -m pip install --quiet --user aiosmtpd 2>/dev/null \
        || python3 -m pip install --quiet aiosmtpd 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages aiosmtpd \
        || die "could not install aiosmtpd with pip"
    python3 -c 'import aiosmtpd' 2>/dev/null || die "aiosmtpd installed but cannot be imported"
}

start_own_smtp() {
    install_aiosmtpd
    local dir port attempt pid _
    dir=$(mktemp -d "${TMPDIR:-/tmp}/reelhouse-smtp.XXXXXX")
    mkdir -p "$dir/mails"
    save_state "$STATE_DIR/smtp.state" SMTP_DIR "$dir" SMTP_PID ""
    for attempt in 1 2 3; do
        port=$(free_port)
        setsid python3 "$REPO_ROOT/scripts/smtp-sink.py" --port "$port" --dir "$dir/mails" \
            --user "$SMTP_USER" --password "$SMTP_PASSWORD" </dev/null >"$dir/smtp-sink.log" 2>&1 &
        pid=$!
        save_state "$STATE_DIR/smtp.state" SMTP_DIR "$dir" SMTP_PID "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            if port_in_use "$port"; then
                SMTP_URL_OUT="smtp://$SMTP_USER:$SMTP_PASSWORD@127.0.0.1:$port"
                SMTP_SINK_DIR="$dir/mails"
                log "started smtp-sink on 127.0.0.1:$port (pid $pid), mails in $dir/mails"
                return 0
            fi
            sleep 0.1
        done
        stop_pid "$pid" smtp-sink.py
        log "smtp-sink did not listen on port $port (attempt $attempt)"
    done
    show_log_tail "$dir/smtp-sink.log"
    die "could not start smtp-sink"
}

stop_own_smtp() {
    local state="$STATE_DIR/smtp.state" SMTP_DIR="" SMTP_PID=""
    [[ -f "$state" ]] || return 0
    # shellcheck disable=SC1090
    source "$state"
    [[ -n "$SMTP_PID" ]] && stop_pid "$SMTP_PID" smtp-sink.py
    if [[ -n "$SMTP_DIR" && -d "$SMTP_DIR" ]]; then
        rm -rf -- "$SMTP_DIR"
        log "stopped smtp-sink ($SMTP_DIR)"
    fi
    rm -f -- "$state"
}

# ---------------------------------------------------------------- commands

write_env_file() {
    local tmp="$ENV_FILE.tmp.$$"
    {
        printf '# written by scripts/test-services.sh start; removed by stop\n'
        export_line REELHOUSE_TEST_PG_URL "$PG_URL"
        export_line REELHOUSE_TEST_REDIS_URL "$REDIS_URL_OUT"
        export_line REELHOUSE_TEST_REDIS_SERVER "$REDIS_SERVER_BIN"
        export_line REELHOUSE_TEST_S3_ENDPOINT "$S3_ENDPOINT"
        export_line REELHOUSE_TEST_S3_BUCKET "$S3_BUCKET"
        export_line REELHOUSE_TEST_S3_REGION "$S3_REGION"
        export_line REELHOUSE_TEST_S3_ACCESS_KEY_ID "$S3_ACCESS_KEY_ID"
        export_line REELHOUSE_TEST_S3_SECRET_ACCESS_KEY "$S3_SECRET_ACCESS_KEY"
        export_line SMTP_URL "$SMTP_URL_OUT"
        export_line SMTP_SINK_DIR "$SMTP_SINK_DIR"
    } >"$tmp"
    mv -f -- "$tmp" "$ENV_FILE"
}

cmd_stop() {
    stop_own_smtp
    stop_own_s3
    stop_own_redis
    stop_own_pg
    rm -f -- "$ENV_FILE"
}

cmd_start() {
    mkdir -p "$STATE_DIR"
    # Idempotent: whatever an earlier `start` left running is replaced.
    cmd_stop
    # Do not leave half-started services behind when something fails.
    trap 'log "start failed; stopping what was started"; cmd_stop' EXIT
    setup_pg
    setup_redis
    start_own_s3
    start_own_smtp
    write_env_file
    trap - EXIT
    log "wrote $ENV_FILE"
}

cmd_status() {
    local f
    if [[ -f "$ENV_FILE" ]]; then cat "$ENV_FILE"; else log "not started"; fi
    for f in pg redis s3 smtp; do
        [[ -f "$STATE_DIR/$f.state" ]] && { printf '# %s (ours):\n' "$f"; cat "$STATE_DIR/$f.state"; }
    done
    return 0
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        printf 'usage: %s start|stop|status\n' "$0" >&2
        exit 2
        ;;
esac
