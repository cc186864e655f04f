// CUDA element-wise kernels: optimizer updates, casts, scaling with a non-finite check, accumulation.
// Grid-stride loops with 64-bit indices; 8 elements per item with 16-byte loads when every pointer is
// 16-byte aligned.
#include <mutex>

#include "core/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/update_item.cuh"

namespace zs::kernels::cuda {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t items) {
  static int sms[64] = {};
  int dev = 0;
  ZS_CHECK_CUDA(cudaGetDevice(&dev));
  if (sms[dev] == 0) ZS_CHECK_CUDA(cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev));
  const int64_t want = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, int64_t{sms[dev]} * 16)));
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

template <DType G, DType S, DType O, bool HasOut, int V>
__global__ void update_kernel(UpdateScalars s, float* p, const typename Storage<G>::type* g,
                              typename Storage<S>::type* st1, typename Storage<S>::type* st2,
                              typename Storage<O>::type* out, const ElementRange* ranges, int64_t nranges, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items = n / V;
  for (int64_t it = tid; it < items; it += stride)
    update_item<G, S, O, HasOut, V>(s, p, g, st1, st2, out, ranges, nranges, it * V);
  if constexpr (V > 1) {
    const int64_t t = items * V + tid;
    if (t < n) update_item<G, S, O, HasOut, 1>(s, p, g, st1, st2, out, ranges, nranges, t);
  }
}

template <DType G, DType S, DType O, bool HasOut>
void launch_update(const UpdateScalars& s, const UpdateArgs& a, cudaStream_t stream) {
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  using OT = typename Storage<O>::type;
  auto* g = static_cast<const GT*>(a.grad);
  auto* st1 = static_cast<ST*>(a.state1);
  auto* st2 = static_cast<ST*>(a.state2);
  auto* out = static_cast<OT*>(a.param_out);
  const bool vec = aligned16(a.param) && aligned16(a.grad) && (!st1 || aligned16(st1)) && (!st2 || aligned16(st2)) &&
                   (!out || aligned16(out));
  if (vec)
    update_kernel<G, S, O, HasOut, 8><<<grid_for(a.n / 8), kThreads, 0, stream>>>(
        s, a.param, g, st1, st2, out, a.decay_ranges, a.num_decay_ranges, a.n);
  else
    update_kernel<G, S, O, HasOut, 1>
        <<<grid_for(a.n), kThreads, 0, stream>>>(s, a.param, g, st1, st2, out, a.decay_ranges, a.num_decay_ranges, a.n);
  ZS_CHECK_CUDA(cudaGetLastError());
}

template <DType G, DType S>
void update_out(const UpdateScalars& s, const UpdateArgs& a, cudaStream_t stream) {
  if (!a.param_out) return launch_update<G, S, DType::f32, false>(s, a, stream);
  switch (a.param_out_dtype) {
    case DType::bf16:
      return launch_update<G, S, DType::bf16, true>(s, a, stream);
    case DType::f16:
      return launch_update<G, S, DType::f16, true>(s, a, stream);
    default:
      return launch_update<G, S, DType::f32, true>(s, a, stream);
  }
}

template <DType G>
void update_state(const UpdateScalars& s, const UpdateArgs& a, cudaStream_t stream) {
  if (a.state_dtype == DType::bf16)
    update_out<G, DType::bf16>(s, a, stream);
  else
    update_out<G, DType::f32>(s, a, stream);
}

template <DType S, DType D, int V>
__global__ void cast_kernel(const typename Storage<S>::type* src, typename Storage<D>::type* dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items = n / V;
  for (int64_t it = tid; it < items; it += stride) {
    float v[V];
    load<S, V>(src, it * V, v);
    store<D, V>(dst, it * V, v);
  }
  if constexpr (V > 1) {
    const int64_t t = items * V + tid;
    if (t < n) dst[t] = from_f32<D>(to_f32<S>(src[t]));
  }
}

template <DType S, DType D>
void launch_cast(const void* src, void* dst, int64_t n, cudaStream_t stream) {
  auto* s = static_cast<const typename Storage<S>::type*>(src);
  auto* d = static_cast<typename Storage<D>::type*>(dst);
  if (aligned16(src) && aligned16(dst))
    cast_kernel<S, D, 8><<<grid_for(n / 8), kThreads, 0, stream>>>(s, d, n);
  else
    cast_kernel<S, D, 1><<<grid_for(n), kThreads, 0, stream>>>(s, d, n);
  ZS_CHECK_CUDA(cudaGetLastError());
}

template <DType S>
void cast_to(const void* src, DType dt, void* dst, int64_t n, cudaStream_t stream) {
  switch (dt) {
    case DType::f32:
      return launch_cast<S, DType::f32>(src, dst, n, stream);
    case DType::bf16:
      return launch_cast<S, DType::bf16>(src, dst, n, stream);
    default:
      return launch_cast<S, DType::f16>(src, dst, n, stream);
  }
}

template <DType T, int V>
__global__ void scale_kernel(typename Storage<T>::type* x, float alpha, int64_t n, float* found) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items = n / V;
  bool bad = false;
  for (int64_t it = tid; it < items; it += stride) {
    float v[V];
    load<T, V>(x, it * V, v);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[k] *= alpha;
      bad |= !(fabsf(v[k]) <= 3.402823466e38f);
    }
    store<T, V>(x, it * V, v);
  }
  if constexpr (V > 1) {
    const int64_t t = items * V + tid;
    if (t < n) {
      const float v = to_f32<T>(x[t]) * alpha;
      bad |= !(fabsf(v) <= 3.402823466e38f);
      x[t] = from_f32<T>(v);
    }
  }
  if (bad && found) *found = 1.0f;
}

template <DType T>
void launch_scale(void* x, float alpha, int64_t n, float* found, cudaStream_t stream) {
  auto* p = static_cast<typename Storage<T>::type*>(x);
  if (aligned16(x))
    scale_kernel<T, 8><<<grid_for(n / 8), kThreads, 0, stream>>>(p, alpha, n, found);
  else
    scale_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(p, alpha, n, found);
  ZS_CHECK_CUDA(cudaGetLastError());
}

template <DType T, int V>
__global__ void add_kernel(const typename Storage<T>::type* src, typename Storage<T>::type* dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items = n / V;
  for (int64_t it = tid; it < items; it += stride) {
    float s[V], d[V];
    load<T, V>(src, it * V, s);
    load<T, V>(dst, it * V, d);
#pragma unroll
    for (int k = 0; k < V; ++k) d[k] += s[k];
    store<T, V>(dst, it * V, d);
  }
  if constexpr (V > 1) {
    const int64_t t = items * V + tid;
    if (t < n) dst[t] = from_f32<T>(to_f32<T>(dst[t]) + to_f32<T>(src[t]));
  }
}

template <DType T>
void launch_add(const void* src, void* dst, int64_t n, cudaStream_t stream) {
  auto* s = static_cast<const typename Storage<T>::type*>(src);
  auto* d = static_cast<typename Storage<T>::type*>(dst);
  if (aligned16(src) && aligned16(dst))
    add_kernel<T, 8><<<grid_for(n / 8), kThreads, 0, stream>>>(s, d, n);
  else
    add_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(s, d, n);
  ZS_CHECK_CUDA(cudaGetLastError());
}

}  // namespace

void update(const UpdateScalars& s, const UpdateArgs& a, cudaStream_t stream) {
  switch (a.grad_dtype) {
    case DType::f32:
      return update_state<DType::f32>(s, a, stream);
    case DType::bf16:
      return update_state<DType::bf16>(s, a, stream);
    default:
      return update_state<DType::f16>(s, a, stream);
  }
}

void cast(const void* src, DType st, void* dst, DType dt, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  switch (st) {
    case DType::f32:
      return cast_to<DType::f32>(src, dt, dst, n, stream);
    case DType::bf16:
      return cast_to<DType::bf16>(src, dt, dst, n, stream);
    default:
      return cast_to<DType::f16>(src, dt, dst, n, stream);
  }
}

void scale(void* x, DType t, float alpha, int64_t n, float* found_nonfinite, cudaStream_t stream) {
  if (n == 0) return;
  switch (t) {
    case DType::f32:
      return launch_scale<DType::f32>(x, alpha, n, found_nonfinite, stream);
    case DType::bf16:
      return launch_scale<DType::bf16>(x, alpha, n, found_nonfinite, stream);
    default:
      return launch_scale<DType::f16>(x, alpha, n, found_nonfinite, stream);
  }
}

void add(const void* src, void* dst, DType t, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  switch (t) {
    case DType::f32:
      return launch_add<DType::f32>(src, dst, n, stream);
    case DType::bf16:
      return launch_add<DType::bf16>(src, dst, n, stream);
    default:
      return launch_add<DType::f16>(src, dst, n, stream);
  }
}

}  // namespace zs::kernels::cuda
