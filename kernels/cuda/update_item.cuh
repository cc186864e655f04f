// One item of the element-wise optimizer update on the device: V consecutive elements from i, read, updated
// by the same formulas in the same order as the CPU loops, and written back (C: how the 16-byte accesses
// treat the caches). The update kernel's body, and bench/adamw_variants.cu's.
#pragma once

#include "kernels/cuda/device_math.cuh"

namespace zs::kernels::cuda {

// The item in registers, in three phases, so that a kernel may have several items' loads in flight before
// it updates the first (bench/adamw_variants.cu); update_item runs them in order.
template <DType G, DType S, int V, Cache C = Cache::normal>
struct UpdateItem {
  using GT = typename Storage<G>::type;
  using ST = typename Storage<S>::type;
  float pk[V], gk[V], m[V] = {}, v[V] = {};

  __device__ __forceinline__ void load(const float* p, const GT* g, const ST* st1, const ST* st2, int64_t i) {
    cuda::load<DType::f32, V, C>(p, i, pk);
    cuda::load<G, V, C>(g, i, gk);
    if (st1) cuda::load<S, V, C>(st1, i, m);
    if (st2) cuda::load<S, V, C>(st2, i, v);
  }

  __device__ __forceinline__ void apply(const UpdateScalars& s, bool has_st1, const ElementRange* ranges,
                                        int64_t nranges, int64_t i) {
    int64_t r = ranges ? first_range_after(ranges, nranges, i) : 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int64_t e = i + k;
      bool decay = true;
      if (ranges) {
        while (r < nranges && ranges[r].end <= e) ++r;
        decay = r < nranges && ranges[r].begin <= e;
      }
      const float wd = decay ? s.weight_decay : 0.0f;
      switch (s.kind) {
        case Optimizer::adamw:
        case Optimizer::adam: {
          const bool decoupled = s.kind == Optimizer::adamw;
          const float decay_f = decoupled ? 1.0f - s.lr * wd : 1.0f, l2 = decoupled ? 0.0f : wd;
          const float gg = gk[k] * s.grad_scale + l2 * pk[k];
          const float mk = s.beta1 * m[k] + s.one_minus_beta1 * gg;
          const float vk = s.beta2 * v[k] + s.one_minus_beta2 * gg * gg;
          m[k] = mk;
          v[k] = vk;
          pk[k] = pk[k] * decay_f - s.step_size * (mk / (sqrtf(vk) / s.bias_correction2_sqrt + s.eps));
          break;
        }
        case Optimizer::sgd: {
          const float gg = gk[k] * s.grad_scale + wd * pk[k];
          if (has_st1) {
            const float b = s.first_step ? gg : s.beta1 * m[k] + s.one_minus_dampening * gg;
            m[k] = b;
            pk[k] = pk[k] - s.lr * (s.nesterov ? gg + s.beta1 * b : b);
          } else {
            pk[k] = pk[k] - s.lr * gg;
          }
          break;
        }
        case Optimizer::lion: {
          const float gg = gk[k] * s.grad_scale;
          const float c = s.beta1 * m[k] + s.one_minus_beta1 * gg;
          const float sign = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
          pk[k] = pk[k] * (1.0f - s.lr * wd) - s.lr * sign;
          m[k] = s.beta2 * m[k] + s.one_minus_beta2 * gg;
          break;
        }
      }
    }
  }

  template <DType O, bool HasOut>
  __device__ __forceinline__ void store(float* p, ST* st1, ST* st2, typename Storage<O>::type* out, int64_t i) const {
    cuda::store<DType::f32, V, C>(p, i, pk);
    if (st1) cuda::store<S, V, C>(st1, i, m);
    if (st2) cuda::store<S, V, C>(st2, i, v);
    if constexpr (HasOut) cuda::store<O, V, C>(out, i, pk);
  }
};

template <DType G, DType S, DType O, bool HasOut, int V, Cache C = Cache::normal>
__device__ __forceinline__ void update_item(const UpdateScalars& s, float* p, const typename Storage<G>::type* g,
                                            typename Storage<S>::type* st1, typename Storage<S>::type* st2,
                                            typename Storage<O>::type* out, const ElementRange* ranges, int64_t nranges,
                                            int64_t i) {
  UpdateItem<G, S, V, C> x;
  x.load(p, g, st1, st2, i);
  x.apply(s, st1 != nullptr, ranges, nranges, i);
  x.template store<O, HasOut>(p, st1, st2, out, i);
}

}  // namespace zs::kernels::cuda
