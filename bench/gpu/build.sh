#!/usr/bin/env bash
# Builds the GPU check on this (CPU) machine for sm_90 and bundles what the GPU machine lacks.
# Output: build/cuda-sm90/gpu-bundle/{bin,lib}: stripped binaries plus Debian's shared libraries they need
# (NCCL and cuBLAS are not bundled: on the GPU machine they come from PyTorch's wheels, see bench/gpu/check.sh;
# cuBLASLt alone is 540 MB), and the same as build/cuda-sm90/gpu-bundle.tar.xz (about 9 MB instead of 63 MiB,
# which OpenBLAS mostly is): carry either; check.sh unpacks the archive when the folder is not there.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --preset cuda-sm90 >/dev/null
cmake --build --preset cuda-sm90 -j "$(nproc)" --target zs_gpu_tests zs_gpt_gpu_tests gpt_train comm_bench optim_bench \
  adamw_variants offload_bench ckpt_bench zsrun zsmem
out=build/cuda-sm90/gpu-bundle
rm -rf "$out" && mkdir -p "$out/bin" "$out/lib"
bins=(build/cuda-sm90/tests/zs_gpu_tests build/cuda-sm90/tests/zs_gpt_gpu_tests build/cuda-sm90/examples/gpt_train
      build/cuda-sm90/bench/comm_bench build/cuda-sm90/bench/optim_bench build/cuda-sm90/bench/adamw_variants
      build/cuda-sm90/bench/offload_bench build/cuda-sm90/bench/ckpt_bench
      build/cuda-sm90/runtime/zsrun build/cuda-sm90/runtime/zsmem)
for b in "${bins[@]}"; do
  cp "$b" "$out/bin/" && strip "$out/bin/$(basename "$b")"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libstdc++*|libgcc_s*|ld-linux*|libdl.so*|libpthread*|librt.so*|libnccl*|libcuda.so*|libcublas*) ;;
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done
done
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true
tar -C build/cuda-sm90 -cf - gpu-bundle | xz -T0 -6 >"$out.tar.xz"
du -sh "$out" "$out.tar.xz"
