// The CPU kernel loops, written once as plain f32 code that the compiler vectorises. Each isa_*.cpp
// includes this file under its own compile flags (scalar, AVX2+F16C, AVX-512) and exports one CpuTable.
// Floating-point contraction is off in all three, so every ISA gives bit-identical results.
// Everything here has internal linkage: no inline function compiled for AVX-512 can leak into
// code that runs on a CPU without it.
#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_table.h"

namespace zs::kernels::cpu {
namespace {

// Elements staged per block: non-f32 operands are converted through an L1-resident f32 buffer.
constexpr int64_t kBlock = 512;

void bf16_to_f32(const uint16_t* __restrict s, float* __restrict d, int64_t n) {
  for (int64_t k = 0; k < n; ++k) d[k] = std::bit_cast<float>(static_cast<uint32_t>(s[k]) << 16);
}

void f32_to_bf16(const float* __restrict s, uint16_t* __restrict d, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    const uint32_t u = std::bit_cast<uint32_t>(s[k]);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x40u;
    d[k] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

void f16_to_f32(const uint16_t* __restrict s, float* __restrict d, int64_t n) {
  int64_t k = 0;
#if defined(__AVX512F__)
  for (; k + 16 <= n; k += 16)
    _mm512_storeu_ps(d + k, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + k))));
#elif defined(__F16C__)
  for (; k + 8 <= n; k += 8)
    _mm256_storeu_ps(d + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k))));
#endif
#if defined(__F16C__)
  for (; k < n; ++k) d[k] = _cvtsh_ss(s[k]);
#else
  for (; k < n; ++k) d[k] = f16_bits_to_f32(s[k]);
#endif
}

void f32_to_f16(const float* __restrict s, uint16_t* __restrict d, int64_t n) {
  int64_t k = 0;
#if defined(__AVX512F__)
  for (; k + 16 <= n; k += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k),
                        _mm512_cvtps_ph(_mm512_loadu_ps(s + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__)
  for (; k + 8 <= n; k += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + k),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#if defined(__F16C__)
  for (; k < n; ++k) d[k] = _cvtss_sh(s[k], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  for (; k < n; ++k) d[k] = f32_to_f16_bits(s[k]);
#endif
}

// Elements [i, i + n) of src as f32: the source itself when it is f32, else converted into buf.
const float* stage_in(const void* src, DType t, int64_t i, int64_t n, float* buf) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(src) + i;
    case DType::bf16:
      bf16_to_f32(static_cast<const uint16_t*>(src) + i, buf, n);
      return buf;
    case DType::f16:
      f16_to_f32(static_cast<const uint16_t*>(src) + i, buf, n);
      return buf;
    case DType::f64:
      break;
  }
  return nullptr;
}

float* stage_inout(void* src, DType t, int64_t i, int64_t n, float* buf) {
  return const_cast<float*>(stage_in(src, t, i, n, buf));
}

// Writes n f32 values to dst[i, i + n) in dtype t (a no-op when they already live there).
void stage_out(const float* v, void* dst, DType t, int64_t i, int64_t n) {
  switch (t) {
    case DType::f32:
      if (v != static_cast<float*>(dst) + i)
        std::memcpy(static_cast<float*>(dst) + i, v, static_cast<std::size_t>(n) * 4);
      break;
    case DType::bf16:
      f32_to_bf16(v, static_cast<uint16_t*>(dst) + i, n);
      break;
    case DType::f16:
      f32_to_f16(v, static_cast<uint16_t*>(dst) + i, n);
      break;
    case DType::f64:
      break;
  }
}

// ---- the update rules (PyTorch's definitions), on f32 blocks -------------------------------------

void sgd_block(float* __restrict p, const float* __restrict g, float* __restrict buf, int64_t n, const UpdateScalars& s,
               float wd) {
  const float gs = s.grad_scale, lr = s.lr, mom = s.beta1, damp = s.one_minus_dampening;
  if (!buf) {
    for (int64_t k = 0; k < n; ++k) p[k] = p[k] - lr * (g[k] * gs + wd * p[k]);
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const float gk = g[k] * gs + wd * p[k];
    const float bk = s.first_step ? gk : mom * buf[k] + damp * gk;
    buf[k] = bk;
    p[k] = p[k] - lr * (s.nesterov ? gk + mom * bk : bk);
  }
}

void lion_block(float* __restrict p, const float* __restrict g, float* __restrict m, int64_t n, const UpdateScalars& s,
                float wd) {
  const float gs = s.grad_scale, lr = s.lr, b1 = s.beta1, b2 = s.beta2, c1 = s.one_minus_beta1, c2 = s.one_minus_beta2,
              decay = 1.0f - s.lr * wd;
  for (int64_t k = 0; k < n; ++k) {
    const float gk = g[k] * gs;
    const float c = b1 * m[k] + c1 * gk;
    const float sign = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
    p[k] = p[k] * decay - lr * sign;
    m[k] = b2 * m[k] + c2 * gk;
  }
}

// bf16 operands read and written inside the math loop (no staging passes): the same rounding as
// f32_to_bf16, so results are identical to the staged path.
struct Bf16 {
  uint16_t bits;
};
inline float to_f32(float x) {
  return x;
}
inline float to_f32(Bf16 x) {
  return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16);
}
inline void set(float& d, float v) {
  d = v;
}
inline void set(Bf16& d, float v) {
  const uint32_t u = std::bit_cast<uint32_t>(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  d.bits = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

// Adam/AdamW over one range: G, S, Out are float or Bf16 (gradient, moments, optional parameter copy).
template <typename G, typename S, typename Out>
void adam_loop(float* __restrict p, const G* __restrict g, S* __restrict m, S* __restrict v, Out* __restrict out,
               int64_t n, const UpdateScalars& s, float wd) {
  const bool decoupled = s.kind == Optimizer::adamw;
  const float gs = s.grad_scale, b1 = s.beta1, b2 = s.beta2, c1 = s.one_minus_beta1, c2 = s.one_minus_beta2;
  const float eps = s.eps, step = s.step_size, bc2 = s.bias_correction2_sqrt;
  const float decay = decoupled ? 1.0f - s.lr * wd : 1.0f;
  const float l2 = decoupled ? 0.0f : wd;
  for (int64_t k = 0; k < n; ++k) {
    const float pk = p[k];
    const float gk = to_f32(g[k]) * gs + l2 * pk;
    const float mk = b1 * to_f32(m[k]) + c1 * gk;
    const float vk = b2 * to_f32(v[k]) + c2 * gk * gk;
    S ms, vs;
    set(ms, mk);
    set(vs, vk);
    m[k] = ms;
    v[k] = vs;
    const float pn = pk * decay - step * (mk / (std::sqrt(vk) / bc2 + eps));
    p[k] = pn;
    if (out) set(out[k], pn);
  }
}

// Adam with bf16 moments, f32 or bf16 gradients and no or a bf16 parameter copy: the fused path.
bool try_fused_bf16_state(const UpdateScalars& s, const UpdateArgs& a, int64_t b, int64_t e, float wd) {
  const bool adam = s.kind == Optimizer::adamw || s.kind == Optimizer::adam;
  if (!adam || a.state_dtype != DType::bf16 || (a.grad_dtype != DType::f32 && a.grad_dtype != DType::bf16) ||
      (a.param_out && a.param_out_dtype != DType::bf16))
    return false;
  auto* m = static_cast<Bf16*>(a.state1) + b;
  auto* v = static_cast<Bf16*>(a.state2) + b;
  Bf16* out = a.param_out ? static_cast<Bf16*>(a.param_out) + b : nullptr;
  if (a.grad_dtype == DType::f32)
    adam_loop(a.param + b, static_cast<const float*>(a.grad) + b, m, v, out, e - b, s, wd);
  else
    adam_loop(a.param + b, static_cast<const Bf16*>(a.grad) + b, m, v, out, e - b, s, wd);
  return true;
}

void update(const UpdateScalars& s, const UpdateArgs& a, int64_t b, int64_t e, bool decay) {
  alignas(64) float gbuf[kBlock], s1buf[kBlock], s2buf[kBlock];
  const float wd = decay ? s.weight_decay : 0.0f;
  if (try_fused_bf16_state(s, a, b, e, wd)) return;
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    const float* g = stage_in(a.grad, a.grad_dtype, i, n, gbuf);
    float* s1 = a.state1 ? stage_inout(a.state1, a.state_dtype, i, n, s1buf) : nullptr;
    float* s2 = a.state2 ? stage_inout(a.state2, a.state_dtype, i, n, s2buf) : nullptr;
    float* p = a.param + i;
    switch (s.kind) {
      case Optimizer::adamw:
      case Optimizer::adam:
        adam_loop(p, g, s1, s2, static_cast<float*>(nullptr), n, s, wd);
        break;
      case Optimizer::sgd:
        sgd_block(p, g, s1, n, s, wd);
        break;
      case Optimizer::lion:
        lion_block(p, g, s1, n, s, wd);
        break;
    }
    if (s1) stage_out(s1, a.state1, a.state_dtype, i, n);
    if (s2) stage_out(s2, a.state2, a.state_dtype, i, n);
    if (a.param_out) stage_out(p, a.param_out, a.param_out_dtype, i, n);
  }
}

void cast(const void* src, DType st, void* dst, DType dt, int64_t b, int64_t e) {
  alignas(64) float buf[kBlock];
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    stage_out(stage_in(src, st, i, n, buf), dst, dt, i, n);
  }
}

bool scale(void* x, DType t, float alpha, int64_t b, int64_t e) {
  alignas(64) float buf[kBlock];
  int bad = 0;
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    float* v = stage_inout(x, t, i, n, buf);
    for (int64_t k = 0; k < n; ++k) {
      v[k] *= alpha;
      bad |= !(std::fabs(v[k]) <= FLT_MAX);
    }
    stage_out(v, x, t, i, n);
  }
  return bad != 0;
}

// Adds the squares of a block (its length a multiple of 16 but for the range's last) into 16 interleaved
// accumulators; their sum, in index order, is the range's.
void add_squares(const float* __restrict v, int64_t n, float* __restrict acc) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int j = 0; j < 16; ++j) acc[j] += v[k + j] * v[k + j];
  for (; k < n; ++k) acc[k & 15] += v[k] * v[k];
}

float total_of(const float* acc) {
  float total = 0.0f;
  for (int j = 0; j < 16; ++j) total += acc[j];
  return total;
}

float sum_squares(const void* x, DType t, int64_t b, int64_t e) {
  alignas(64) float buf[kBlock];
  float acc[16] = {};
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    add_squares(stage_in(x, t, i, n, buf), n, acc);
  }
  return total_of(acc);
}

// dst += src over [b, e), summed in f32 and rounded once to t; with acc, the squares of the stored values
// (still in L1) are added into it as sum_squares would.
void add_into(const void* src, void* dst, DType t, int64_t b, int64_t e, float* acc) {
  alignas(64) float sbuf[kBlock], dbuf[kBlock];
  for (int64_t i = b; i < e; i += kBlock) {
    const int64_t n = std::min(kBlock, e - i);
    const float* s = stage_in(src, t, i, n, sbuf);
    float* d = stage_inout(dst, t, i, n, dbuf);
    for (int64_t k = 0; k < n; ++k) d[k] += s[k];
    stage_out(d, dst, t, i, n);
    if (acc) add_squares(stage_in(dst, t, i, n, dbuf), n, acc);
  }
}

void add(const void* src, void* dst, DType t, int64_t b, int64_t e) {
  add_into(src, dst, t, b, e, nullptr);
}

float add_sum_squares(const void* src, void* dst, DType t, int64_t b, int64_t e) {
  float acc[16] = {};
  add_into(src, dst, t, b, e, acc);
  return total_of(acc);
}

}  // namespace
}  // namespace zs::kernels::cpu
