// CUDA sum of squares: a fixed grid of block partials (CUB block reduction), then one block sums them in
// order. Deterministic for a given size and device; per-stream scratch allocated once, never per call.
#include <cub/block/block_reduce.cuh>

#include <map>
#include <mutex>

#include "core/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_math.cuh"

namespace zs::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocks = 1024;

template <DType T>
__global__ void partial_sums(const typename Storage<T>::type* x, int64_t n, float* partials) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  float acc = 0.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = to_f32<T>(x[i]);
    acc += v * v;
  }
  const float block = Reduce(tmp).Sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = block;
}

__global__ void final_sum(const float* partials, int count, float* out) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  float acc = 0.0f;
  for (int i = threadIdx.x; i < count; i += kThreads) acc += partials[i];
  const float total = Reduce(tmp).Sum(acc);
  if (threadIdx.x == 0) *out = total;
}

// One partials buffer per stream, so concurrent reductions on different streams never share one.
float* scratch_for(cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, float*> scratch;
  int dev = 0;
  ZS_CHECK_CUDA(cudaGetDevice(&dev));
  std::lock_guard lk(mu);
  float*& p = scratch[{dev, stream}];
  if (!p) ZS_CHECK_CUDA(cudaMalloc(&p, kBlocks * sizeof(float)));
  return p;
}

template <DType T>
void launch(const void* x, int64_t n, float* out, cudaStream_t stream) {
  float* partials = scratch_for(stream);
  const int blocks = static_cast<int>(std::min<int64_t>(kBlocks, std::max<int64_t>(1, (n + kThreads - 1) / kThreads)));
  partial_sums<T><<<blocks, kThreads, 0, stream>>>(static_cast<const typename Storage<T>::type*>(x), n, partials);
  ZS_CHECK_CUDA(cudaGetLastError());
  final_sum<<<1, kThreads, 0, stream>>>(partials, blocks, out);
  ZS_CHECK_CUDA(cudaGetLastError());
}

}  // namespace

void sum_squares(const void* x, DType t, int64_t n, float* out, cudaStream_t stream) {
  switch (t) {
    case DType::f32:
      return launch<DType::f32>(x, n, out, stream);
    case DType::bf16:
      return launch<DType::bf16>(x, n, out, stream);
    default:
      return launch<DType::f16>(x, n, out, stream);
  }
}

}  // namespace zs::kernels::cuda
