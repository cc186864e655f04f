// DType (f32, bf16, f16, f64) and bit-exact conversions: round-to-nearest-even, NaN and Inf kept.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace zs {

enum class DType : uint8_t { f32, bf16, f16, f64 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::f16:
      return 2;
    case DType::f64:
      return 8;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::f64:
      return "f64";
  }
  return "?";
}

// Parses "f32"/"fp32"/"float32", "bf16"/"bfloat16", "f16"/"fp16"/"float16", "f64"; throws zs::Error otherwise.
DType dtype_parse(std::string_view name);

// bf16 is the top half of an f32. Rounding is to nearest, ties to even; a NaN stays a (quiet) NaN.
constexpr uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

constexpr float bf16_bits_to_f32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// IEEE binary16. Overflow rounds to Inf (|x| >= 65520), subnormals are produced exactly with RNE.
constexpr uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (ax < 0x38800000u) {
    // Below 2^-14 the result is subnormal: adding 0.5 aligns the mantissa so the FPU's RNE does the rounding.
    constexpr uint32_t magic = 126u << 23;
    const float sum = std::bit_cast<float>(ax) + std::bit_cast<float>(magic);
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(sum) - magic));
  }
  const uint32_t mant_odd = (ax >> 13) & 1u;
  ax += 0xc8000fffu + mant_odd;  // rebias the exponent (15 - 127) and round to nearest even
  return static_cast<uint16_t>(sign | (ax >> 13));
}

constexpr float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(mag));
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

// Element load/store as f32, for code that handles every dtype (reductions, tests).
inline float load_as_f32(const void* p, DType t, std::size_t i) {
  switch (t) {
    case DType::f32:
      return static_cast<const float*>(p)[i];
    case DType::bf16:
      return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f16:
      return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::f64:
      return static_cast<float>(static_cast<const double*>(p)[i]);
  }
  return 0.f;
}

inline void store_from_f32(void* p, DType t, std::size_t i, float v) {
  switch (t) {
    case DType::f32:
      static_cast<float*>(p)[i] = v;
      break;
    case DType::bf16:
      static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v);
      break;
    case DType::f16:
      static_cast<uint16_t*>(p)[i] = f32_to_f16_bits(v);
      break;
    case DType::f64:
      static_cast<double*>(p)[i] = v;
      break;
  }
}

}  // namespace zs
