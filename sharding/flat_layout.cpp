// FlatLayout arithmetic.
#include "sharding/flat_layout.h"

#include <algorithm>

#include "core/error.h"

namespace zs {

namespace {
int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}
}  // namespace

FlatLayout make_flat_layout(std::span<const TensorSpec> tensors, int world, int64_t align) {
  ZS_CHECK(world >= 1, "flat layout: world size must be >= 1, got {}", world);
  ZS_CHECK(align >= 1, "flat layout: alignment must be >= 1 element, got {}", align);
  FlatLayout l;
  l.world = world;
  l.align = align;
  int64_t pos = 0;
  for (const TensorSpec& t : tensors) {
    const int64_t n = t.shape.numel();
    ZS_CHECK(n >= 0, "flat layout: tensor '{}' has a negative size", t.name);
    pos = round_up(pos, align);
    l.slots.push_back({pos, n});
    pos += n;
  }
  l.used = pos;
  l.padded = std::max<int64_t>(round_up(pos, align * world), align * world);
  l.shard = l.padded / world;
  return l;
}

std::vector<kernels::ElementRange> FlatLayout::shard_ranges(int rank, const std::vector<bool>& select) const {
  std::vector<kernels::ElementRange> out;
  const int64_t lo = shard_offset(rank), hi = lo + shard;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    if (!select[i]) continue;
    const int64_t b = std::max(lo, slots[i].offset), e = std::min(hi, slots[i].offset + slots[i].numel);
    if (b >= e) continue;
    if (!out.empty() && out.back().end == b - lo)
      out.back().end = e - lo;
    else
      out.push_back({b - lo, e - lo});
  }
  return out;
}

UnitLayouts make_unit_layouts(std::span<const TensorSpec> tensors, int world) {
  UnitLayouts out;
  std::vector<TensorSpec> trainable, frozen;
  for (const auto& t : tensors) {
    out.slot_of.push_back(static_cast<int>(t.trainable ? trainable.size() : frozen.size()));
    (t.trainable ? trainable : frozen).push_back(t);
  }
  out.layout = make_flat_layout(trainable, world);
  if (!frozen.empty()) out.frozen = make_flat_layout(frozen, world);
  return out;
}

}  // namespace zs
