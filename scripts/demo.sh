#!/usr/bin/env bash
# The main job until the example GPT trainer lands: build, then run a sharded collectives demo over
# 4 ranks with zsrun (Gloo on CPU; NCCL on a GPU machine) that checks every value it moves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target zsrun comm_bench
exec build/cpu/runtime/zsrun --nproc-per-node "${NPROC:-4}" --master-port 0 -- \
  build/cpu/bench/comm_bench --backend gloo --max-bytes 16M "$@"
