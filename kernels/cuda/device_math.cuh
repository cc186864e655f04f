// Device-side element access and update rules: the same formulas, in the same order, as the CPU loops
// (compiled with --fmad=false so results match the CPU kernels bit for bit).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/update_scalars.h"

namespace zs::kernels::cuda {

template <DType T>
struct Storage;
template <>
struct Storage<DType::f32> {
  using type = float;
};
template <>
struct Storage<DType::bf16> {
  using type = uint16_t;
};
template <>
struct Storage<DType::f16> {
  using type = uint16_t;
};

template <DType T>
__device__ __forceinline__ float to_f32(typename Storage<T>::type x) {
  if constexpr (T == DType::f32)
    return x;
  else if constexpr (T == DType::bf16)
    return __uint_as_float(static_cast<uint32_t>(x) << 16);
  else
    return __half2float(__ushort_as_half(x));
}

template <DType T>
__device__ __forceinline__ typename Storage<T>::type from_f32(float v) {
  if constexpr (T == DType::f32)
    return v;
  else if constexpr (T == DType::bf16) {
    const uint32_t u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
    return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  } else {
    return __half_as_ushort(__float2half_rn(v));
  }
}

// How 16-byte accesses treat the caches. The kernels use `normal`; bench/adamw_variants.cu measures the
// others on the AdamW update: `streaming` (evict-first loads and stores, ld/st.global.cs) and `prefetch`
// (loads that skip L1 and ask L2 to fetch the whole 256-byte block, stores evict-first).
enum class Cache { normal, streaming, prefetch };

template <Cache C>
__device__ __forceinline__ uint4 load16(const void* p) {
  if constexpr (C == Cache::normal) {
    return *static_cast<const uint4*>(p);
  } else if constexpr (C == Cache::streaming) {
    return __ldcs(static_cast<const uint4*>(p));
  } else {
    uint4 w;
    asm volatile("ld.global.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w)
                 : "l"(p));
    return w;
  }
}

template <Cache C>
__device__ __forceinline__ void store16(void* p, uint4 w) {
  if constexpr (C == Cache::normal)
    *static_cast<uint4*>(p) = w;
  else
    __stcs(static_cast<uint4*>(p), w);
}

// V consecutive elements starting at i, as f32. With V == 8 every operand is read with 16-byte loads
// (the caller guarantees 16-byte alignment of the pointer at i); an f32 operand takes two, 16 bytes apart,
// so one warp-wide access uses half of each 32-byte sector it touches and the next one the other half.
// V == 4 with f32 is one 16-byte access, a warp's 512 contiguous bytes (bench/adamw_variants.cu measures
// both).
template <DType T, int V, Cache C = Cache::normal>
__device__ __forceinline__ void load(const typename Storage<T>::type* p, int64_t i, float (&o)[V]) {
  if constexpr (V == 8 && T == DType::f32 && C == Cache::normal) {
    const float4 a = reinterpret_cast<const float4*>(p + i)[0], b = reinterpret_cast<const float4*>(p + i)[1];
    o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
  } else if constexpr (V == 4 && T == DType::f32) {
    const uint4 a = load16<C>(p + i);
    o[0] = __uint_as_float(a.x), o[1] = __uint_as_float(a.y), o[2] = __uint_as_float(a.z), o[3] = __uint_as_float(a.w);
  } else if constexpr (V == 8 && T == DType::f32) {
    const uint4 a = load16<C>(p + i), b = load16<C>(p + i + 4);
    const uint32_t words[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = __uint_as_float(words[k]);
  } else if constexpr (V == 8) {
    const uint4 w = load16<C>(p + i);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      o[2 * k] = to_f32<T>(static_cast<uint16_t>(words[k] & 0xffffu));
      o[2 * k + 1] = to_f32<T>(static_cast<uint16_t>(words[k] >> 16));
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = to_f32<T>(p[i + k]);
  }
}

template <DType T, int V, Cache C = Cache::normal>
__device__ __forceinline__ void store(typename Storage<T>::type* p, int64_t i, const float (&v)[V]) {
  if constexpr (V == 8 && T == DType::f32 && C == Cache::normal) {
    reinterpret_cast<float4*>(p + i)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p + i)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else if constexpr (V == 4 && T == DType::f32) {
    store16<C>(p + i,
               make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3])));
  } else if constexpr (V == 8 && T == DType::f32) {
    store16<C>(p + i,
               make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3])));
    store16<C>(p + i + 4,
               make_uint4(__float_as_uint(v[4]), __float_as_uint(v[5]), __float_as_uint(v[6]), __float_as_uint(v[7])));
  } else if constexpr (V == 8) {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      words[k] =
          static_cast<uint32_t>(from_f32<T>(v[2 * k])) | (static_cast<uint32_t>(from_f32<T>(v[2 * k + 1])) << 16);
    store16<C>(p + i, make_uint4(words[0], words[1], words[2], words[3]));
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[i + k] = from_f32<T>(v[k]);
  }
}

// Index of the first decay range whose end is past i (== count when none).
__device__ __forceinline__ int64_t first_range_after(const ElementRange* r, int64_t count, int64_t i) {
  int64_t lo = 0, hi = count;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (r[mid].end <= i)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

}  // namespace zs::kernels::cuda
