// CUDA sum of squares (optionally behind an add into the tensor): a fixed grid of block partials (CUB
// block reduction), then one block sums them in order. Deterministic for a given size and device;
// per-stream scratch allocated once, never per call.
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

// With src, x += src first (stored in x's dtype) and the stored values squared: the same elements per
// thread as without, so the same sum as an add followed by a sum of squares.
template <DType T>
__global__ void partial_sums(typename Storage<T>::type* x, const typename Storage<T>::type* src, int64_t n,
                             float* partials) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  float acc = 0.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    typename Storage<T>::type xi = x[i];
    if (src) x[i] = xi = from_f32<T>(to_f32<T>(xi) + to_f32<T>(src[i]));
    const float v = to_f32<T>(xi);
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

// x is written only when src is given.
template <DType T>
void launch(void* x, const void* src, int64_t n, float* out, cudaStream_t stream) {
  using S = typename Storage<T>::type;
  float* partials = scratch_for(stream);
  const int blocks = static_cast<int>(std::min<int64_t>(kBlocks, std::max<int64_t>(1, (n + kThreads - 1) / kThreads)));
  partial_sums<T><<<blocks, kThreads, 0, stream>>>(static_cast<S*>(x), static_cast<const S*>(src), n, partials);
  ZS_CHECK_CUDA(cudaGetLastError());
  final_sum<<<1, kThreads, 0, stream>>>(partials, blocks, out);
  ZS_CHECK_CUDA(cudaGetLastError());
}

}  // namespace

void sum_squares(const void* x, DType t, int64_t n, float* out, cudaStream_t stream) {
  add_sum_squares(nullptr, const_cast<void*>(x), t, n, out, stream);  // (nothing added: x is only read)
}

void add_sum_squares(const void* src, void* dst, DType t, int64_t n, float* out, cudaStream_t stream) {
  switch (t) {
    case DType::f32:
      return launch<DType::f32>(dst, src, n, out, stream);
    case DType::bf16:
      return launch<DType::bf16>(dst, src, n, out, stream);
    default:
      return launch<DType::f16>(dst, src, n, out, stream);
  }
}

}  // namespace zs::kernels::cuda
