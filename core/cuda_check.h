// ZS_CHECK_CUDA and ZS_CHECK_NCCL, built on the same generic thrower as ZS_CHECK (CUDA builds only).
#pragma once

#include "core/error.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#define ZS_CHECK_CUDA(expr)                                                                          \
  do {                                                                                               \
    cudaError_t zs_err_ = (expr);                                                                    \
    if (zs_err_ != cudaSuccess) [[unlikely]]                                                         \
      ::zs::detail::throw_error(__FILE__, __LINE__, "CUDA",                                          \
                                ::fmt::format("{}: {} ({})", #expr, cudaGetErrorName(zs_err_),        \
                                              cudaGetErrorString(zs_err_)));                         \
  } while (0)

#define ZS_CHECK_NCCL(expr, ...)                                                                     \
  do {                                                                                               \
    ncclResult_t zs_res_ = (expr);                                                                   \
    if (zs_res_ != ncclSuccess && zs_res_ != ncclInProgress) [[unlikely]]                            \
      ::zs::detail::throw_error(__FILE__, __LINE__, "NCCL",                                          \
                                ::fmt::format("{}: {} ({}) {}", #expr, ncclGetErrorString(zs_res_),   \
                                              ncclGetLastError(nullptr), ::fmt::format(__VA_ARGS__))); \
  } while (0)
