#!/usr/bin/env bash
# The test command: install dependencies, build the CPU preset, run the unit and dist suites, then the
# sanitized suites (scripts/sanitize.sh: clang ASan + UBSan with the libFuzzer targets for ~30 s each, then
# ThreadSanitizer; ZS_SKIP_SANITIZE=1 skips them).
# (gpu tests live in the cuda preset and run on a GPU machine through bench/gpu/check.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=$(nproc)
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$jobs"
ctest --preset cpu -L 'unit|dist' -j "$jobs" "$@"
if [ "${ZS_SKIP_SANITIZE:-0}" != 1 ]; then
  scripts/sanitize.sh asan
  scripts/sanitize.sh tsan
fi
