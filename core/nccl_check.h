// ZS_CHECK_NCCL (CUDA builds only), built on the generic thrower of ZS_CHECK.
#pragma once

#include <nccl.h>

#include "core/error.h"

#define ZS_CHECK_NCCL(expr, ...)                                                                       \
  do {                                                                                                 \
    ncclResult_t zs_res_ = (expr);                                                                     \
    if (zs_res_ != ncclSuccess && zs_res_ != ncclInProgress) [[unlikely]]                              \
      ::zs::detail::throw_error(__FILE__, __LINE__, "NCCL",                                            \
                                ::fmt::format("{}: {} ({}) {}", #expr, ncclGetErrorString(zs_res_),    \
                                              ncclGetLastError(nullptr), ::fmt::format(__VA_ARGS__))); \
  } while (0)
