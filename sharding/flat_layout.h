// FlatLayout (pure): a unit's tensors laid end to end in a flat buffer, each start aligned, the total
// padded so it splits into `world` equal, aligned shards. Shard r is [r*S, (r+1)*S); tensors may straddle.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor_view.h"
#include "kernels/kernels.h"

namespace zs {

struct TensorSpec {
  std::string name;
  Shape shape;
  bool trainable = true;
  bool weight_decay = true;  // false for biases and norms, as AdamW users expect
};

struct FlatLayout {
  struct Slot {
    int64_t offset = 0;  // first element in the flat buffer
    int64_t numel = 0;
  };
  std::vector<Slot> slots;  // one per tensor, in registration order
  int64_t used = 0;         // end of the last tensor
  int64_t padded = 0;       // multiple of world * align
  int64_t shard = 0;        // padded / world
  int world = 1;
  int64_t align = 1;

  int64_t shard_offset(int rank) const { return shard * rank; }
  // The tensors' elements, without alignment or padding.
  int64_t elements() const {
    int64_t n = 0;
    for (const Slot& s : slots) n += s.numel;
    return n;
  }
  // The parts of the selected tensors that fall into `rank`'s shard, in shard-local element coordinates,
  // sorted and disjoint (adjacent parts merged). `select[i]` says whether tensor i counts.
  std::vector<kernels::ElementRange> shard_ranges(int rank, const std::vector<bool>& select) const;
};

// Pure. `align` is in elements (>= 1); 16 keeps every tensor and shard 64-byte aligned in f32.
FlatLayout make_flat_layout(std::span<const TensorSpec> tensors, int world, int64_t align = 16);

// A unit's two layouts: its trainable tensors (parameters, gradients, optimizer state) and its frozen ones
// (parameters only; empty when there are none). slot_of[i]: tensor i's slot in the layout it belongs to.
struct UnitLayouts {
  FlatLayout layout, frozen;
  std::vector<int> slot_of;
};
UnitLayouts make_unit_layouts(std::span<const TensorSpec> tensors, int world);

}  // namespace zs
