// How a buffer splits into per-rank chunks (pure arithmetic): rank i's share of a reduce-scatter, its part of
// an all-gather.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zs::chunks {

struct Range {
  int64_t offset = 0;
  int64_t count = 0;
};

// Chunk i of n elements split into `parts` contiguous chunks whose sizes differ by at most one (larger
// ones first).
constexpr Range chunk(int64_t n, int parts, int i) {
  const int64_t base = n / parts, extra = n % parts;
  return {i * base + std::min<int64_t>(i, extra), base + (i < extra ? 1 : 0)};
}

}  // namespace zs::chunks
