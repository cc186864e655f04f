#!/usr/bin/env bash
# The main job: install, build, then train the example GPT with ZeRO-3 over 2 ranks under zsrun (CPU, Gloo)
# on this project's own sources and docs, show the loss falling, save a checkpoint and export the model.
# Arguments go to gpt_train (e.g. --steps 1000, --stage 2, --resume); NPROC sets the rank count.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target zsrun gpt_train zsckpt
mkdir -p out
build/cpu/runtime/zsrun --nproc-per-node "${NPROC:-2}" --master-port 0 -- \
  build/cpu/examples/gpt_train --steps 300 --ckpt-dir out/gpt_ckpt --export out/gpt.safetensors --sample 160 "$@"
build/cpu/runtime/zsckpt verify out/gpt_ckpt
