// Ring arithmetic (pure): how a buffer splits into per-rank chunks and which chunk moves at each ring step.
#pragma once

#include <algorithm>
#include <cstdint>

namespace zs::ring {

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

// Reduce-scatter ring, step s in [0, N-1): rank r sends chunk send_chunk and receives chunk recv_chunk
// from its left neighbour. After N-1 steps rank r holds the full reduction of chunk r.
constexpr int rs_send_chunk(int r, int s, int n) {
  return ((r - s - 1) % n + n) % n;
}
constexpr int rs_recv_chunk(int r, int s, int n) {
  return ((r - s - 2) % n + n) % n;
}
// All-gather ring, step s in [0, N-1): rank r forwards chunk ag_send_chunk and receives ag_recv_chunk.
constexpr int ag_send_chunk(int r, int s, int n) {
  return ((r - s) % n + n) % n;
}
constexpr int ag_recv_chunk(int r, int s, int n) {
  return ((r - s - 1) % n + n) % n;
}

}  // namespace zs::ring
