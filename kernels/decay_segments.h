// Splitting an element range into runs with and without weight decay (pure; unit-tested).
#pragma once

#include <algorithm>

#include "kernels/kernels.h"

namespace zs::kernels {

// Calls f(begin, end, decay) for consecutive runs covering [b, e). `ranges` (sorted, disjoint) are the
// elements that take weight decay; null means every element does.
template <typename F>
void for_decay_segments(const ElementRange* ranges, int64_t count, int64_t b, int64_t e, F&& f) {
  if (b >= e) return;
  if (!ranges) {
    f(b, e, true);
    return;
  }
  const ElementRange* end = ranges + count;
  const ElementRange* it =
      std::upper_bound(ranges, end, b, [](int64_t pos, const ElementRange& r) { return pos < r.end; });
  int64_t pos = b;
  while (pos < e) {
    if (it == end || it->begin >= e) {
      f(pos, e, false);
      return;
    }
    if (pos < it->begin) {
      f(pos, it->begin, false);
      pos = it->begin;
    }
    const int64_t stop = std::min(e, it->end);
    if (stop > pos) f(pos, stop, true);
    pos = std::max(pos, stop);
    ++it;
  }
}

}  // namespace zs::kernels
