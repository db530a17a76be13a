#!/usr/bin/env bash
# The fault matrix (server/tests/api/chaos/): each test starts `reelhouse serve`
# replicas and `reelhouse worker` processes on one PostgreSQL (behind a TCP proxy),
# a Redis of its own and the test S3, runs a workload (tus uploads resuming on any
# replica, videoEvents feeds resuming by cursor, webhooks) through one fault, then
# asserts that nothing accepted was lost or duplicated and nothing is stuck.
# Prints the table: fault, workload, accepted, lost, duplicated, recovery time.
#
# REELHOUSE_CHAOS   short (default; the `make test` stage: fewer users and videos)
#                   or full (`make chaos`)
# REELHOUSE_CHAOS_FILTER  a nextest filter expression instead of every fault,
#                   e.g. 'test(/redis/)'
# The test services come from .test-services/env when test.sh sourced it; run alone,
# this script starts them (and stops them at the end).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

scale="${REELHOUSE_CHAOS:-short}"
case "$scale" in short | full) ;; *)
  echo "test-chaos: REELHOUSE_CHAOS must be short or full, not '$scale'" >&2
  exit 2
  ;;
esac

if [[ -z "${REELHOUSE_TEST_S3_ENDPOINT:-}" ]]; then
  trap 'scripts/test-services.sh stop || true' EXIT
  scripts/test-services.sh start
  # shellcheck source=/dev/null
  source .test-services/env
fi

report_dir="${CARGO_TARGET_DIR:-target}/chaos"
mkdir -p "$report_dir"
report="$(cd "$report_dir" && pwd)/report-$scale.jsonl"
rm -f "$report"

filter="test(/^chaos::/)"
if [[ -n "${REELHOUSE_CHAOS_FILTER:-}" ]]; then
  filter="$filter & (${REELHOUSE_CHAOS_FILTER})"
fi
# One fault at a time: each runs several processes, and two at once on a small
# machine would measure each other.
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run -p reelhouse --test api --no-fail-fast --test-threads 1 -E "$filter")
else
  runner=(cargo test -p reelhouse --test api --no-fail-fast -- --test-threads 1 chaos::)
fi

printf '==> fault matrix (%s): %s\n' "$scale" "${runner[*]}" >&2
status=0
REELHOUSE_CHAOS="$scale" REELHOUSE_TEST_BACKEND=postgres REELHOUSE_CHAOS_REPORT="$report" "${runner[@]}" || status=$?

python3 - "$report" <<'EOF'
import json, sys
rows = []
try:
    with open(sys.argv[1]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
except FileNotFoundError:
    pass
print("\nfault matrix:", file=sys.stderr)
print("| fault | workload | accepted | lost | duplicated | recovery time |", file=sys.stderr)
print("| --- | --- | ---: | ---: | ---: | ---: |", file=sys.stderr)
for r in rows:
    rec = "never" if r["recovery_secs"] is None else f'{r["recovery_secs"]:.1f} s'
    print(f'| {r["fault"]} | {r["workload"]} | {r["accepted"]} | {r["lost"]} | {r["duplicated"]} | {rec} |', file=sys.stderr)
for r in rows:
    print(f'  {r["fault"]}: {r["notes"]} ({r["elapsed_secs"]:.0f} s)', file=sys.stderr)
    for p in r["problems"]:
        print(f'    problem: {p}', file=sys.stderr)
skipped = [r["fault"] for r in rows if r["notes"].startswith("SKIPPED")]
if skipped:
    print(f'\n!!! test-chaos: {len(skipped)} fault(s) SKIPPED, not survived: {", ".join(skipped)}', file=sys.stderr)
EOF

if ((status)); then
  echo "test-chaos: FAILED (exit $status)" >&2
  exit "$status"
fi
echo "test-chaos: every fault survived" >&2
