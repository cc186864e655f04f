// bf16/f16 conversions against an f64 reference: exhaustive over all 16-bit patterns, RNE at midpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"

namespace zs {
namespace {

bool is_nan16(uint16_t h, bool bf16) {
  return bf16 ? ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) : ((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
}

// The 16-bit value nearest to x (ties to even), found by scanning neighbours in f64: an independent oracle.
uint16_t nearest_reference(float x, bool bf16) {
  auto to_f64 = [&](uint16_t h) { return static_cast<double>(bf16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h)); };
  const double v = x;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double av = std::fabs(v);
  const uint16_t inf = bf16 ? 0x7f80 : 0x7c00;
  // Largest finite magnitude and the rounding threshold to infinity (max + half an ulp).
  const double max_finite = to_f64(inf - 1);
  const double ulp_at_max = max_finite - to_f64(inf - 2);
  if (av >= max_finite + ulp_at_max / 2) return sign | inf;
  // Binary search the magnitude bit patterns (monotone for non-negative finite values).
  uint16_t lo = 0, hi = inf - 1;
  while (lo < hi) {
    uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (to_f64(mid) <= av)
      lo = mid;
    else
      hi = mid - 1;
  }
  if (lo == inf - 1) return sign | lo;
  const double dlo = av - to_f64(lo), dhi = to_f64(lo + 1) - av;
  uint16_t pick = dlo < dhi ? lo : dhi < dlo ? static_cast<uint16_t>(lo + 1) : ((lo & 1) ? lo + 1 : lo);
  return sign | pick;
}

class Convert16 : public ::testing::TestWithParam<bool> {};

TEST_P(Convert16, EveryPatternRoundTripsAndNaNStaysNaN) {
  const bool bf16 = GetParam();
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const float f = bf16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
    const uint16_t back = bf16 ? f32_to_bf16_bits(f) : f32_to_f16_bits(f);
    if (is_nan16(h, bf16)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << b;
      ASSERT_TRUE(is_nan16(back, bf16)) << std::hex << b;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << "NaN sign lost for " << std::hex << b;
    } else {
      ASSERT_EQ(back, h) << std::hex << b;
    }
  }
}

TEST_P(Convert16, DecodingMatchesTheFormula) {
  const bool bf16 = GetParam();
  const int mant_bits = bf16 ? 7 : 10, bias = bf16 ? 127 : 15, exp_max = bf16 ? 255 : 31;
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const int sign = (h >> 15) ? -1 : 1;
    const int e = (h >> mant_bits) & exp_max;
    const int m = h & ((1 << mant_bits) - 1);
    const double f = bf16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
    if (e == exp_max) {
      if (m == 0) {
        ASSERT_EQ(f, sign * INFINITY);
      }
      continue;
    }
    const double ref = e == 0 ? sign * std::ldexp(m, 1 - bias - mant_bits)
                              : sign * std::ldexp((1 << mant_bits) + m, e - bias - mant_bits);
    ASSERT_EQ(f, ref) << std::hex << b;
  }
}

TEST_P(Convert16, MidpointsRoundToEvenAndNeighboursRoundToNearest) {
  const bool bf16 = GetParam();
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    if (is_nan16(h, bf16) || (h & 0x7fff) >= (bf16 ? 0x7f80 : 0x7c00) - 1) continue;
    const double a = bf16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
    const double c = bf16 ? bf16_bits_to_f32(h + 1) : f16_bits_to_f32(h + 1);
    const float mid = static_cast<float>((a + c) / 2);  // exact in f32 for both formats
    ASSERT_EQ(static_cast<double>(mid), (a + c) / 2);
    for (float x : {mid, std::nextafter(mid, -INFINITY), std::nextafter(mid, INFINITY)}) {
      const uint16_t got = bf16 ? f32_to_bf16_bits(x) : f32_to_f16_bits(x);
      ASSERT_EQ(got, nearest_reference(x, bf16)) << "x=" << x << " bits " << std::hex << b;
    }
  }
}

TEST_P(Convert16, RandomFloatsMatchReference) {
  const bool bf16 = GetParam();
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    float x = std::bit_cast<float>(bits(rng));
    if (std::isnan(x)) continue;
    if (!bf16 && i % 2) x = std::ldexp(std::fmod(x, 1.0f), (i % 50) - 30);  // dense near f16's range
    const uint16_t got = bf16 ? f32_to_bf16_bits(x) : f32_to_f16_bits(x);
    ASSERT_EQ(got, nearest_reference(x, bf16)) << "x=" << x;
  }
}

TEST_P(Convert16, InfinitiesAndOverflow) {
  const bool bf16 = GetParam();
  auto conv = [&](float x) { return bf16 ? f32_to_bf16_bits(x) : f32_to_f16_bits(x); };
  const uint16_t inf = bf16 ? 0x7f80 : 0x7c00;
  EXPECT_EQ(conv(INFINITY), inf);
  EXPECT_EQ(conv(-INFINITY), inf | 0x8000);
  EXPECT_EQ(conv(std::numeric_limits<float>::max()), inf);
  if (!bf16) {
    EXPECT_EQ(conv(65504.0f), 0x7bff);
    EXPECT_EQ(conv(65519.99f), 0x7bff);
    EXPECT_EQ(conv(65520.0f), 0x7c00);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, Convert16, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "bf16" : "f16"; });

TEST(DType, ParseAndSizes) {
  EXPECT_EQ(dtype_parse("bf16"), DType::bf16);
  EXPECT_EQ(dtype_parse("fp32"), DType::f32);
  EXPECT_EQ(dtype_size(DType::f16), 2u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_THROW(dtype_parse("int8"), std::exception);
}

}  // namespace
}  // namespace zs
