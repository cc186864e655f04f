#!/usr/bin/env bash
# Installs a build tree into a scratch prefix, builds tests/install (a program outside this tree) against
# it with find_package(zeroshard), and runs it at world 2 under the installed zsrun.
#   check_install.sh BUILD_DIR SCRATCH_DIR CXX_COMPILER "CXX_FLAGS" "EXE_LINKER_FLAGS"
set -euo pipefail
build=$1 scratch=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$here" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$3" -DCMAKE_CXX_FLAGS="$4" -DCMAKE_EXE_LINKER_FLAGS="$5" >/dev/null
cmake --build "$scratch/build" -j 2 >/dev/null
"$scratch/prefix/bin/zsrun" --nproc-per-node 2 --master-port 0 -- "$scratch/build/consumer"
rm -rf "$scratch"
