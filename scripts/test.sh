#!/usr/bin/env bash
# The test command: install dependencies, build the CPU preset, run the unit and dist suites, then the
# sanitized suites (scripts/sanitize.sh: clang ASan + UBSan with the libFuzzer targets for ~30 s each, then
# ThreadSanitizer; ZS_SKIP_SANITIZE=1 skips them).
# (gpu tests live in the cuda preset and run on a GPU machine through bench/gpu/check.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=$(nproc)
# Tests run two per core: the multi-rank suites spend much of their time with ranks waiting on one another
# (a handoff per collective), and another test fills that time (2 cores: the suite in 201 s at -j4, 265 s at -j2).
test_jobs=$((2 * jobs))
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$jobs"
echo "test.sh: cpu preset built (${SECONDS} s in)"
ctest --preset cpu -L 'unit|dist' -j "$test_jobs" "$@"
if [ "${ZS_SKIP_SANITIZE:-0}" != 1 ]; then
  scripts/sanitize.sh asan
  scripts/sanitize.sh tsan
fi
