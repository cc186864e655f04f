// The CUDA error thrower behind ZS_CHECK_CUDA.
#include "core/cuda_check.h"

#include "core/error.h"

namespace zs::detail {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw_error(file, line, "CUDA", fmt::format("{}: {} ({})", expr, cudaGetErrorName(err), cudaGetErrorString(err)));
}

}  // namespace zs::detail
