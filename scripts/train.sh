#!/usr/bin/env bash
# The main job: install, build, then train the example GPT with ZeRO-3 under zsrun on this project's own
# sources and docs, show the loss falling, save a checkpoint and export the model. With a GPU (and nvcc) it
# builds the cuda preset and starts one rank per GPU (NCCL, CUDA layers); otherwise 2 ranks on the CPU (Gloo).
# Arguments go to gpt_train (e.g. --steps 1000, --stage 2, --resume); NPROC sets the rank count.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
preset=cpu nproc_default=2
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${gpus:-0}" -gt 0 ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  preset=cuda nproc_default=$gpus
fi
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)" --target zsrun gpt_train zsckpt
mkdir -p out
echo "training on ${preset/cpu/the CPU} with ${NPROC:-$nproc_default} ranks"
build/$preset/runtime/zsrun --nproc-per-node "${NPROC:-$nproc_default}" --master-port 0 -- \
  build/$preset/examples/gpt_train --steps 300 --ckpt-dir out/gpt_ckpt --export out/gpt.safetensors --sample 160 "$@"
build/$preset/runtime/zsckpt verify out/gpt_ckpt
