// The monotonic clock in nanoseconds, for counters of time spent waiting (summed in atomics).
#pragma once

#include <chrono>
#include <cstdint>

namespace zs {

inline int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace zs
