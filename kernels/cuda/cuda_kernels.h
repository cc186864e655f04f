// Launchers of the CUDA kernels (CUDA builds only); kernels/dispatch.cpp is their one caller.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/update_scalars.h"

namespace zs::kernels::cuda {

void update(const UpdateScalars& s, const UpdateArgs& a, cudaStream_t stream);
void cast(const void* src, DType st, void* dst, DType dt, int64_t n, cudaStream_t stream);
void scale(void* x, DType t, float alpha, int64_t n, float* found_nonfinite, cudaStream_t stream);
void add(const void* src, void* dst, DType t, int64_t n, cudaStream_t stream);
void sum_squares(const void* x, DType t, int64_t n, float* out, cudaStream_t stream);
void add_sum_squares(const void* src, void* dst, DType t, int64_t n, float* out, cudaStream_t stream);

}  // namespace zs::kernels::cuda
