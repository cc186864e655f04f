#!/usr/bin/env bash
# The sanitized suites. `scripts/sanitize.sh` (part of scripts/test.sh): clang with ASan + UBSan (the
# `sanitize` preset, which also builds the libFuzzer targets): the unit suite and the collectives and engine
# suites at worlds 2 and 3, then each fuzz target for ~30 s. `scripts/sanitize.sh tsan`: ThreadSanitizer over
# the unit suite (streams, store, thread pool, ledger) and, at world 2, the collectives and the engine's
# offload, stage, error and memory tests. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
test_jobs=$((2 * jobs))  # as scripts/test.sh: the multi-rank suites wait more than they compute
case "${1:-asan}" in
  asan)
    cmake --preset sanitize >/dev/null
    cmake --build --preset sanitize -j "$jobs"
    echo "sanitize.sh: sanitize preset built in ${SECONDS} s"
    ctest --preset sanitize -j "$test_jobs"
    ctest --preset fuzz -j "$jobs"  # each target is one thread
    ;;
  tsan)
    cmake --preset tsan >/dev/null
    cmake --build --preset tsan -j "$jobs"
    echo "sanitize.sh: tsan preset built in ${SECONDS} s"
    ctest --preset tsan -j "$test_jobs"
    ;;
  *) echo "usage: scripts/sanitize.sh [asan|tsan]" >&2; exit 2 ;;
esac
