// ZS_CHECK_CUDA (CUDA builds only). Free of fmt so .cu files can use it; the message is built out of line
// by the same thrower as every other ZS_CHECK.
#pragma once

#include <cuda_runtime_api.h>

namespace zs::detail {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
}

#define ZS_CHECK_CUDA(expr)                                               \
  do {                                                                    \
    cudaError_t zs_err_ = (expr);                                         \
    if (zs_err_ != cudaSuccess) [[unlikely]]                              \
      ::zs::detail::throw_cuda_error(zs_err_, #expr, __FILE__, __LINE__); \
  } while (0)
