// Unit: one layer's tensors, its flat layout, and its state for the current step
// (params: sharded -> gathering -> gathered -> released; grads: none -> accumulating -> reducing -> reduced).
// With the optimizer offloaded at stages 1-2, an update leaves the replica `updating` until its shard is back
// from the host and all-gathered again.
#pragma once

#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/comm.h"
#include "sharding/flat_layout.h"

namespace zs {

enum class ParamState : uint8_t { sharded, gathering, gathered, updating };
enum class GradState : uint8_t { none, accumulating, reducing, reduced };

struct Unit {
  std::string name;
  std::vector<TensorSpec> tensors;
  FlatLayout layout;         // the trainable tensors: parameters, gradients, optimizer state
  FlatLayout frozen;         // the frozen ones (trainable=false): parameters only; empty when there are none
  std::vector<int> slot_of;  // tensor i -> its slot in `layout` or in `frozen`

  bool is_frozen(int i) const { return !tensors[static_cast<std::size_t>(i)].trainable; }
  // "unit.tensor": the key of the initialiser and the name in safetensors files.
  std::string full_name(int i) const { return name + "." + tensors[static_cast<std::size_t>(i)].name; }
  // Where tensor i starts among the unit's full parameters: trainable ones first, frozen ones after them.
  int64_t param_offset(int i) const {
    const auto k = static_cast<std::size_t>(slot_of[static_cast<std::size_t>(i)]);
    return is_frozen(i) ? layout.padded + frozen.slots[k].offset : layout.slots[k].offset;
  }

  // Persistent storage (which ones exist depends on the stage and precision; see Engine::setup).
  Buffer full_params;   // compute dtype, whole unit incl. frozen tensors (stages 0-2)
  Buffer frozen_shard;  // compute dtype, this rank's shard of the frozen tensors (stage 3)
  Buffer master;        // f32: whole unit (stage 0) or this rank's shard (1-3); absent when it is full_params
  Buffer m, v;          // optimizer state, same extent as master
  Buffer grads;         // reduce dtype: full (Config::Zero::full_grads), else this rank's shard
  Buffer decay_ranges;  // kernels::ElementRange list where the optimizer runs (the device, or the host)
  // offload.optimizer: cpu (master, m and v above are then in the host pool).
  Buffer param_shard;  // device, compute dtype: the shard the stage-3 all-gather starts from
  Buffer host_grads;   // host, reduce dtype: the reduced shard the CPU step reads (two slots when delayed)
  Buffer host_params;  // host, compute dtype: the CPU step's output for bf16/f16 compute
  int64_t num_decay_ranges = 0;
  int pipe = -1;  // offload: this unit's index in the CPU step's pipeline (-1: its optimizer runs on the device)

  // Step state.
  ParamState param_state = ParamState::sharded;
  GradState grad_state = GradState::none;
  int gather_buffer = -1;  // index into the engine's gather pool while gathered (stage 3)
  int grad_buffer = -1;    // index into the engine's grad pool while grads are full (stages 2-3)
  int holders = 0;         // live GatheredParams handles
  int gathers_this_step = 0;
  int micro_batches = 0;  // reduce_grads calls since the last step
  Work pending;           // the all-gather or reduce in flight
};

}  // namespace zs
