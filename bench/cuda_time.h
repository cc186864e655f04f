// GPU time of the work f() enqueues on the legacy default stream, in milliseconds, between two events
// (the benchmarks' one timer; fmt-free, so .cu files include it too). CUDA builds only.
#pragma once

#include <cuda_runtime_api.h>

#include "core/cuda_check.h"

namespace zs::bench {

template <typename F>
float cuda_elapsed_ms(F&& f) {
  cudaEvent_t a, b;
  ZS_CHECK_CUDA(cudaEventCreate(&a));
  ZS_CHECK_CUDA(cudaEventCreate(&b));
  ZS_CHECK_CUDA(cudaEventRecord(a));
  f();
  ZS_CHECK_CUDA(cudaEventRecord(b));
  ZS_CHECK_CUDA(cudaEventSynchronize(b));
  float ms = 0;
  ZS_CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms;
}

}  // namespace zs::bench
