// One item of the element-wise optimizer update on the device: V consecutive elements from i, read, updated
// by the same formulas in the same order as the CPU loops, and written back (C: how the 16-byte accesses
// treat the caches). The update kernel's body, and bench/adamw_variants.cu's.
#pragma once

#include "kernels/cuda/device_math.cuh"

namespace zs::kernels::cuda {

template <DType G, DType S, DType O, bool HasOut, int V, Cache C = Cache::normal>
__device__ __forceinline__ void update_item(const UpdateScalars& s, float* p, const typename Storage<G>::type* g,
                                            typename Storage<S>::type* st1, typename Storage<S>::type* st2,
                                            typename Storage<O>::type* out, const ElementRange* ranges, int64_t nranges,
                                            int64_t i) {
  float pk[V], gk[V], m[V] = {}, v[V] = {};
  load<DType::f32, V, C>(p, i, pk);
  load<G, V, C>(g, i, gk);
  if (st1) load<S, V, C>(st1, i, m);
  if (st2) load<S, V, C>(st2, i, v);
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
        if (st1) {
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
  store<DType::f32, V, C>(p, i, pk);
  if (st1) store<S, V, C>(st1, i, m);
  if (st2) store<S, V, C>(st2, i, v);
  if constexpr (HasOut) store<O, V, C>(out, i, pk);
}

}  // namespace zs::kernels::cuda
