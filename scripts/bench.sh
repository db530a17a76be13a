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

# 2. Fan-out / API / upload benchmarks (later issue) go here, same shape:
#    if want fanout; then scripts/bench-fanout.sh; fi
#    if want api;    then scripts/bench-api.sh;    fi
#    if want upload; then scripts/bench-upload.sh; fi
