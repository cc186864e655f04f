#!/usr/bin/env bash
# The test command: install dependencies, build the CPU preset, run the unit and dist suites, then the
# libFuzzer targets for ~30 s each (clang preset `fuzz`; ZS_SKIP_FUZZ=1 skips them).
# (gpu tests live in the cuda preset and run on a GPU machine through bench/gpu/check.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
jobs=$(nproc)
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$jobs"
ctest --preset cpu -L 'unit|dist' -j "$jobs" "$@"
if [ "${ZS_SKIP_FUZZ:-0}" != 1 ]; then
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz -j "$jobs"
  ctest --preset fuzz
fi
