// Memory planning (pure): the bytes of every buffer the engine allocates on one rank, from the units'
// tensors and the config. Engine::setup allocates exactly these sizes and zsmem predicts with them, so a
// prediction is the engine's own arithmetic (padding, alignment, pools), not an approximation.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/comm_gloo.h"
#include "core/memory_ledger.h"
#include "offload/host_pool.h"
#include "offload/state_swap.h"
#include "runtime/config.h"
#include "sharding/flat_layout.h"

namespace zs {

// One unit's persistent buffers on one rank, in bytes (0: not allocated).
struct UnitBuffers {
  int64_t full_params = 0;  // device, compute dtype, the whole unit incl. frozen tensors (stages 0-2)
  int64_t frozen_shard =
      0;               // compute dtype, this rank's shard of the frozen tensors (stage 3; host with offload.params)
  int64_t master = 0;  // f32 shard (stage 0: whole); absent when the full f32 parameters are the master
  MemCategory master_category = MemCategory::master;  // params when the master is the only copy (f32, stage 3)
  int64_t m = 0, v = 0;                               // optimizer state
  int64_t grads = 0;  // device, reduce dtype: whole unit (Config::Zero::full_grads) or this rank's shard
  // The unit's optimizer runs on the host (offload.optimizer: cpu, and offloaded_units() chose it): master, m
  // and v above live in the host pool, and:
  bool offload = false;
  bool params_on_host = false;  // offload.params: cpu or nvme (the frozen shard and host_params are the parameters)
  int64_t param_shard = 0;      // device, compute dtype: the shard the all-gather starts from (stage 3)
  int64_t host_grads = 0;       // host, reduce dtype: the reduced shard the CPU step reads (x2 when delayed)
  int64_t host_params = 0;      // host, compute dtype: what the CPU step writes for bf16/f16 compute (and f32
                                // with the state on disk: the master is not in memory)
  MemCategory host_params_category = MemCategory::offload_staging;  // params with offload.params
  // offload.optimizer: nvme: master, m and v above are the unit's region of the state file, not memory.
  bool state_on_disk = false;
  // offload.params: nvme: host_params above is the unit's region of the parameters' file, not memory (the
  // frozen shard stays in host memory).
  bool params_on_disk = false;
  // offload.grads: nvme: host_grads above is the unit's region of the gradients' file, not memory.
  bool grads_on_disk = false;
  // Host-pool bytes (each part 64-byte aligned in the one pinned allocation).
  int64_t host_pool_bytes() const;
  offload::SwapRegion swap_region() const { return offload::swap_region(master, m, v); }
  offload::SwapRegion param_region() const { return offload::swap_region(host_params, 0, 0); }
  offload::SwapRegion grad_region() const { return offload::swap_region(host_grads, 0, 0); }
};
UnitBuffers unit_buffers(const FlatLayout& layout, const FlatLayout& frozen, const Config& cfg, bool offloaded);

// With offload.accumulate on the host, each of the offloaded step's kAccumulationStaging host buffers
// (offload::Pipeline) takes a micro-batch's reduced shard while the one before is added up: the largest
// offloaded unit's shard in the reduce dtype. 0 otherwise. Pure.
int64_t accumulation_staging_bytes(int64_t largest_offloaded_shard, const Config& cfg);

// The per-element states the optimizer keeps: m (all but SGD without momentum) and v (Adam, AdamW). Pure.
struct OptimizerStates {
  bool m = false, v = false;
};
OptimizerStates optimizer_states(const Config& cfg);

// Which units' optimizer runs on the host: none without offload.optimizer: cpu, every unit at offload.ratio
// 1, else the fewest last units (in registration order) that hold at least `ratio` of the trainable
// elements (trainable[u]: unit u's), so the next forward's first units are updated on the device at once
// while the host updates the rest. Pure: the engine allocates and zsmem predicts with it.
std::vector<bool> offloaded_units(std::span<const int64_t> trainable, const Config& cfg);

// The engine's control messages between ranks (agreement checks, error verdicts, checkpoint digests) travel
// through one device buffer of this many floats per rank of the world, allocated with the engine: the
// largest message, Engine::agree's, is a verdict and 480 characters of its error.
constexpr int64_t kControlFloats = 481;

// The engine's fixed pools: stage-3 gather buffers (each holds the largest unit in the compute dtype) and
// the stage-2/3 gradient buffers (the largest unit's trainable part in the reduce dtype).
struct PoolPlan {
  int gather_count = 0;
  int64_t gather_bytes = 0;  // each
  int grad_count = 0;
  int64_t grad_bytes = 0;  // each
};
PoolPlan pool_plan(int64_t largest_elements, int64_t largest_trainable_elements, int num_units, const Config& cfg);

// Gloo staging buffers, one per group and stream that runs collectives: the engine's reduce stream, the
// group's default stream (the engine's agreement checks and norm, and the app's own collectives) and, at
// stages 1-3, the gather stream. With hybrid sharding these run in the shard group, and two more: the
// world's default stream (agreement checks, the app's collectives) and the replica group's reduce stream.
inline int comm_streams(int stage, bool hybrid) {
  return (stage == 0 ? 2 : 3) + (hybrid ? 2 : 0);
}

using CategoryBytes = std::array<int64_t, kMemCategoryCount>;

struct MemoryPlan {
  CategoryBytes device{};  // the engine's device memory by category
  CategoryBytes host{};    // and its host memory (offload, Gloo's staging)
  int64_t disk = 0;        // offload.*: nvme: this rank's files (the optimizer's state, parameters, gradients)
  static int64_t sum(const CategoryBytes& b) {
    int64_t t = 0;
    for (int64_t x : b) t += x;
    return t;
  }
  int64_t device_total() const { return sum(device); }
  int64_t host_total() const { return sum(host); }
};

// What the engine allocates on rank `rank` of `world` for a model of these units (each a list of tensors),
// sharded over cfg.zero.shard_size(world) ranks.
// comm_scratch is Gloo's host staging (CPU device), counted for the engine's streams.
MemoryPlan plan_memory(std::span<const std::vector<TensorSpec>> units, const Config& cfg, int world, int rank,
                       bool cpu_device);

}  // namespace zs
