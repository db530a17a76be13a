#!/usr/bin/env bash
# Runs every test: system packages, test services (PostgreSQL, Redis, S3),
# then the Rust suite once per database backend (sqlite, then postgres).
# Exits non-zero if anything failed.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

scripts/bootstrap.sh

trap 'scripts/test-services.sh stop || true' EXIT
scripts/test-services.sh start
# shellcheck source=/dev/null
source .test-services/env

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

if cargo nextest --version >/dev/null 2>&1; then
    runner=(cargo nextest run --workspace --no-fail-fast)
else
    runner=(cargo test --workspace --no-fail-fast)
fi

declare -A result=()
failed=0

run_suite() {
    local backend="$1"
    printf '\n==> Rust suite, REELHOUSE_TEST_BACKEND=%s: %s\n' "$backend" "${runner[*]}" >&2
    if REELHOUSE_TEST_BACKEND="$backend" "${runner[@]}"; then
        result[$backend]=passed
    else
        result[$backend]="FAILED (exit $?)"
        failed=1
    fi
}

run_suite sqlite
run_suite postgres

# ---------------------------------------------------------------------------
# LATER STEPS GO HERE (not written yet):
#   - web-demo browser tests (against a server started on the test services)
#   - load-harness smoke test (load-tests/, a short run with a few users)
# Each should record its outcome in result[...] and set failed=1 on failure,
# like run_suite above, so the summary below reports it.
# ---------------------------------------------------------------------------

summary="test.sh: rust/sqlite ${result[sqlite]}, rust/postgres ${result[postgres]}"
if ((failed)); then
    printf '\n%s -> FAILED\n' "$summary" >&2
    exit 1
fi
printf '\n%s -> all passed\n' "$summary" >&2
