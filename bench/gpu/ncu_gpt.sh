#!/usr/bin/env bash
# Per-kernel times of the example GPT's step (check.sh, ZS_GPU_PROFILE=1): Nsight Compute times every kernel
# of 2 steps of two d=2048 blocks (the 1.34 B model's shapes) and counts its DRAM bytes;
# bench/gpu/ncu_summary.py sums them by kernel, with the GB/s each reached.
# Usage: ncu_gpt.sh NCU BUNDLE ATTENTION (plain or fused); the raw output stays in $OUT/ncu_ATTENTION.txt.
set -uo pipefail
ncu=$1 bundle=$2 attn=$3
raw=${OUT:-/tmp}/ncu_$attn.txt
"$ncu" --clock-control none --target-processes all --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv --page raw \
  "$bundle/bin/zsrun" --nproc-per-node 1 --master-port 0 -- "$bundle/bin/gpt_train" --device cuda --precision bf16 \
  --attention "$attn" --d-model 2048 --layers 2 --heads 16 --seq 1024 --batch 8 --vocab 32000 --steps 2 \
  --log-every 1 --eval-every 0 --eval-batches 1 --data . >"$raw" 2>&1
rc=$?
python3 "$(dirname "$0")/ncu_summary.py" "$raw" || tail -20 "$raw"
exit $rc
