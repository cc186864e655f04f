// Ring chunking.
#include "core/ring.h"

#include "core/error.h"

namespace zs::ring {

std::vector<Range> split_even(int64_t n, int parts) {
  ZS_CHECK(n >= 0 && parts >= 1, "cannot split {} elements into {} parts", n, parts);
  std::vector<Range> out(static_cast<std::size_t>(parts));
  const int64_t base = n / parts, extra = n % parts;
  int64_t off = 0;
  for (int i = 0; i < parts; ++i) {
    const int64_t c = base + (i < extra ? 1 : 0);
    out[static_cast<std::size_t>(i)] = {off, c};
    off += c;
  }
  return out;
}

}  // namespace zs::ring
