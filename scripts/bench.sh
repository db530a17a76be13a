#!/usr/bin/env bash
# `make bench`: every benchmark that exists. Benchmarks print figures and ratios against an
# in-run baseline and write docs/bench/*; they never assert timings (that is `make test`'s job).
#
# Environment (passed through): BENCH_SECONDS, BENCH_RUNS, BENCH_PROFILE, CARGO_TARGET_DIR;
# BENCH_ONLY=transcode runs one benchmark.
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

# 3. Fan-out / API benchmarks (load harness issue) go here, same shape:
#    if want fanout; then scripts/bench-fanout.sh; fi
#    if want api;    then scripts/bench-api.sh;    fi
