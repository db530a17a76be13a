#!/usr/bin/env bash
# `make bench`: every benchmark that exists. Benchmarks print figures and ratios against an
# in-run baseline and write docs/bench/*; they never assert timings (that is `make test`'s job).
#
# Environment (passed through): BENCH_SECONDS, BENCH_RUNS, BENCH_PROFILE, CARGO_TARGET_DIR;
# BENCH_ONLY=transcode|upload|fanout|api|remote|publish (comma-separated) runs some of them.
set -euo pipefail
cd "$(dirname "$0")/.."

want() { [[ -z "${BENCH_ONLY:-}" || ",${BENCH_ONLY}," == *",$1,"* ]]; }

# 1. Transcode: reelhouse's HLS ladder vs the ffmpeg CLI (docs/bench/transcode.md).
if want transcode; then
  python3 scripts/bench-transcode.py
fi

# 2. Upload: a 1 GiB tus upload vs a raw signed PUT of the same bytes to the same
#    storage, and the server's peak RSS growth (docs/bench/upload.md).
if want upload; then
  profile="${BENCH_PROFILE:-release}"
  target="${CARGO_TARGET_DIR:-target}"
  if [[ "$profile" == "release" ]]; then
    cargo build --release -p reelhouse
    bin="$target/release/reelhouse"
  else
    cargo build -p reelhouse
    bin="$target/debug/reelhouse"
  fi
  python3 scripts/bench-upload.py --binary "$bin" --out "${BENCH_DOCS_DIR:-docs/bench}"
fi

# 3. Fan-out and API (load harness, docs/bench/{fanout,fanout-two-instances,api}.md):
#    reelhouse-load against an embedded reelhouse (and two API processes on PostgreSQL +
#    Redis), reelhouse-baseline (bare actix; a raw Redis subscriber for the fan-out) and,
#    for the fan-out, the Node.js peer (load-tests/peer-node) in the same run.
#    BENCH_SUBSCRIBERS (default 100,1000,10000) and BENCH_LOAD_SECONDS (default 20) tune
#    them; the fd limit is raised to the hard limit.
if want fanout || want api; then
  profile="${BENCH_PROFILE:-release}"
  target="${CARGO_TARGET_DIR:-target}"
  # Two builds, not one `-p reelhouse -p reelhouse-load`: together they unify features
  # differently and rebuild the server's dependencies.
  if [[ "$profile" == "release" ]]; then
    cargo build --release -p reelhouse && cargo build --release -p reelhouse-load
  else
    cargo build -p reelhouse && cargo build -p reelhouse-load
    profile=debug
  fi
  ulimit -n "$(ulimit -Hn)" || true
  for what in fanout api; do
    want "$what" || continue
    python3 scripts/bench-load.py --what "$what" --profile "$profile" \
      --server-bin "$target/$profile/reelhouse" --load-bin "$target/$profile/reelhouse-load" \
      --baseline-bin "$target/$profile/reelhouse-baseline" \
      --subscribers "${BENCH_SUBSCRIBERS:-100,1000,10000}" --seconds "${BENCH_LOAD_SECONDS:-20}" \
      --out "${BENCH_DOCS_DIR:-docs/bench}"
  done
  # The two-instance row: two API processes (PostgreSQL + Redis), subscribers split.
  if want fanout; then
    python3 scripts/bench-load.py --what fanout --two-instances --profile "$profile" \
      --server-bin "$target/$profile/reelhouse" --load-bin "$target/$profile/reelhouse-load" \
      --baseline-bin "$target/$profile/reelhouse-baseline" \
      --subscribers "${BENCH_SUBSCRIBERS:-100,1000,10000}" --seconds "${BENCH_LOAD_SECONDS:-20}" \
      --out "${BENCH_DOCS_DIR:-docs/bench}"
  fi
fi

# 4. Remote workers (issue 21, docs/bench/remote.md): N encodes through the API with 1
#    database-attached worker (the baseline), 1 remote worker over the channel, and 1 of
#    each, alternated BENCH_RUNS times (default 2); PostgreSQL + S3 from
#    scripts/test-services.sh. BENCH_REMOTE_ENCODES (default 4), BENCH_REMOTE_CAPACITY
#    (default 1) and BENCH_REMOTE_SECONDS (default 10) tune it.
if want remote; then
  profile="${BENCH_PROFILE:-release}"
  target="${CARGO_TARGET_DIR:-target}"
  if [[ "$profile" == "release" ]]; then
    cargo build --release -p reelhouse
  else
    cargo build -p reelhouse
    profile=debug
  fi
  REELHOUSE_BIN="$target/$profile/reelhouse" python3 scripts/bench-remote.py
fi

# 5. Redis publishes (issue 19, docs/bench/publish.md): PUBLISH/s of the batching event
#    publisher vs a plain pipelined client and vs one task per event, against a Redis
#    channel nobody subscribes to. Redis: $REDIS_URL, else scripts/test-services.sh's.
#    BENCH_PUBLISH_EVENTS (default 200000) and BENCH_RUNS (default 3) tune it.
if want publish; then
  started=""
  redis_url="${REDIS_URL:-}"
  if [[ -z "$redis_url" ]]; then
    if [[ ! -f .test-services/env ]]; then
      scripts/test-services.sh start
      started=1
    fi
    # shellcheck disable=SC1091
    source .test-services/env
    redis_url="$REELHOUSE_TEST_REDIS_URL"
  fi
  out="${BENCH_DOCS_DIR:-docs/bench}"
  mkdir -p "$out"
  REELHOUSE_BENCH_REDIS_URL="$redis_url" cargo bench -p reelhouse --bench redis_publish | tee "$out/publish.md"
  if [[ -n "$started" ]]; then scripts/test-services.sh stop; fi
fi
