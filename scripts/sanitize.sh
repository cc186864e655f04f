#!/usr/bin/env bash
# The sanitized suites. `scripts/sanitize.sh` (part of scripts/test.sh): clang with ASan + UBSan (the
# `sanitize` preset, which also builds the libFuzzer targets): the unit suite and the collectives and engine
# suites at worlds 2 and 3, then each fuzz target for ~30 s. `scripts/sanitize.sh tsan`: ThreadSanitizer over
# the unit suite (streams, store, thread pool, ledger) and, at world 2, the collectives and the engine's
# offload, stage, error and memory tests. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
case "${1:-asan}" in
  asan)
    cmake --preset sanitize >/dev/null
    cmake --build --preset sanitize -j "$jobs"
    ctest --preset sanitize -j "$jobs"
    ctest --preset fuzz
    ;;
  tsan)
    cmake --preset tsan >/dev/null
    cmake --build --preset tsan -j "$jobs"
    ctest --preset tsan -j "$jobs"
    ;;
  *) echo "usage: scripts/sanitize.sh [asan|tsan]" >&2; exit 2 ;;
esac
