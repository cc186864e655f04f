// Memory planning arithmetic.
#include "runtime/memory_plan.h"

#include <algorithm>

#include "kernels/kernels.h"
#include "offload/pipeline.h"
#include "runtime/checkpoint.h"

namespace zs {

UnitBuffers unit_buffers(const FlatLayout& layout, const FlatLayout& frozen, const Config& cfg, bool offloaded) {
  const int stage = cfg.zero.stage;
  const int64_t P = layout.padded, S = layout.shard, PF = frozen.padded;
  const auto cs = static_cast<int64_t>(dtype_size(cfg.precision.param));
  const auto rs = static_cast<int64_t>(dtype_size(cfg.precision.reduce));
  const bool f32 = cfg.precision.param == DType::f32;
  const auto& o = cfg.optimizer;
  UnitBuffers b;
  if (stage <= 2)
    b.full_params = (P + PF) * cs;
  else
    b.frozen_shard = frozen.shard * cs;
  // The f32 master: for f32 compute at stages 0-2 it is the full parameters themselves.
  if (stage == 3 || !f32) b.master = S * 4;
  if (stage == 3 && f32) b.master_category = MemCategory::params;
  const auto ss = static_cast<int64_t>(dtype_size(o.state_dtype));
  const OptimizerStates states = optimizer_states(cfg);
  if (states.m) b.m = S * ss;
  if (states.v) b.v = S * ss;
  const bool full_grads = cfg.zero.full_grads();
  b.grads = (full_grads ? P : S) * rs;
  if (offloaded) {
    // The CPU step owns the f32 master (a copy apart from any f32 replica on the device), m and v, and reads
    // the reduced gradient shard from the host; the device keeps what the forward and backward touch.
    b.offload = true;
    b.params_on_host = cfg.offload.params_offloaded();
    b.params_on_disk = cfg.offload.params_on_nvme();
    b.master = S * 4;
    b.master_category = MemCategory::master;
    // The reduce-scatter lands in the gradient pool, then goes to the host; with sharded accumulation the
    // micro-batches' shards add up there (offload.accumulate: host) or on the device first.
    if (!full_grads && (!cfg.zero.sharded_accumulation() || cfg.host_accumulation())) b.grads = 0;
    b.host_grads = S * rs * (cfg.offload.delayed() ? 2 : 1);
    b.state_on_disk = cfg.offload.state_on_nvme();
    b.grads_on_disk = cfg.offload.grads_on_nvme();
    if (!f32 || b.state_on_disk) b.host_params = S * cs;
    if (b.params_on_host)
      b.host_params_category = MemCategory::params;
    else if (stage == 3)
      b.param_shard = S * cs;
  }
  return b;
}

std::vector<bool> offloaded_units(std::span<const int64_t> trainable, const Config& cfg) {
  const bool all = cfg.offload.optimizer_on_cpu();
  std::vector<bool> out(trainable.size(), all);
  if (!all || cfg.offload.ratio >= 1.0) return out;
  int64_t total = 0;
  for (int64_t n : trainable) total += n;
  const double want = cfg.offload.ratio * static_cast<double>(total);
  int64_t have = 0;  // elements of the units chosen so far, from the last one back
  for (std::size_t u = trainable.size(); u-- > 0;) {
    out[u] = have == 0 || static_cast<double>(have) < want;
    if (out[u]) have += trainable[u];
  }
  return out;
}

OptimizerStates optimizer_states(const Config& cfg) {
  const auto& o = cfg.optimizer;
  return {o.type != kernels::Optimizer::sgd || o.momentum != 0.0f,
          o.type == kernels::Optimizer::adamw || o.type == kernels::Optimizer::adam};
}

int64_t UnitBuffers::host_pool_bytes() const {
  if (!offload) return 0;
  auto aligned = offload::pool_part_bytes;
  return (state_on_disk ? 0 : aligned(master) + aligned(m) + aligned(v)) + (grads_on_disk ? 0 : aligned(host_grads)) +
         (params_on_disk ? 0 : aligned(host_params)) + (params_on_host ? aligned(frozen_shard) : 0);
}

int64_t accumulation_staging_bytes(int64_t largest_offloaded_shard, const Config& cfg) {
  if (!cfg.host_accumulation()) return 0;
  return largest_offloaded_shard * static_cast<int64_t>(dtype_size(cfg.precision.reduce));
}

PoolPlan pool_plan(int64_t largest_elements, int64_t largest_trainable_elements, int num_units, const Config& cfg) {
  PoolPlan p;
  if (cfg.zero.stage == 3) {
    p.gather_count =
        cfg.zero.reshard_after_forward ? cfg.zero.max_live_units : std::max(cfg.zero.max_live_units, num_units);
    p.gather_bytes = largest_elements * static_cast<int64_t>(dtype_size(cfg.precision.param));
  }
  if (!cfg.zero.full_grads()) {
    p.grad_count = 2;
    p.grad_bytes = largest_trainable_elements * static_cast<int64_t>(dtype_size(cfg.precision.reduce));
  }
  return p;
}

MemoryPlan plan_memory(std::span<const std::vector<TensorSpec>> units, const Config& cfg, int world, int rank,
                       bool cpu_device) {
  MemoryPlan plan;
  auto dev = [&](MemCategory c) -> int64_t& { return plan.device[static_cast<std::size_t>(c)]; };
  auto host = [&](MemCategory c) -> int64_t& { return plan.host[static_cast<std::size_t>(c)]; };
  const int stage = cfg.zero.stage, shards = cfg.zero.shard_size(world), shard = cfg.zero.shard_rank(world, rank);
  int64_t largest = 0, largest_trainable = 0;
  std::vector<UnitLayouts> layouts;
  std::vector<int64_t> trainable;
  for (const auto& tensors : units) {
    layouts.push_back(make_unit_layouts(tensors, stage == 0 ? 1 : shards));
    trainable.push_back(layouts.back().layout.elements());
  }
  const std::vector<bool> offloaded = offloaded_units(trainable, cfg);
  std::vector<offload::SwapRegion> on_disk, params_on_disk, grads_on_disk;
  int64_t largest_offloaded_shard = 0;
  for (std::size_t i = 0; i < units.size(); ++i) {
    const std::vector<TensorSpec>& tensors = units[i];
    const UnitLayouts& l = layouts[i];
    largest = std::max(largest, l.layout.padded + l.frozen.padded);
    largest_trainable = std::max(largest_trainable, l.layout.padded);
    const UnitBuffers b = unit_buffers(l.layout, l.frozen, cfg, offloaded[i]);
    if (b.offload) largest_offloaded_shard = std::max(largest_offloaded_shard, l.layout.shard);
    auto state = [&](MemCategory c) -> int64_t& { return b.offload ? host(c) : dev(c); };
    dev(MemCategory::params) += b.full_params + b.param_shard;
    (b.params_on_host ? host(MemCategory::params) : dev(MemCategory::params)) += b.frozen_shard;
    if (b.state_on_disk) {
      on_disk.push_back(b.swap_region());
    } else {
      state(b.master_category) += b.master;
      state(MemCategory::optim_state) += b.m + b.v;
    }
    dev(MemCategory::grads) += b.grads;
    if (b.grads_on_disk)
      grads_on_disk.push_back(b.grad_region());
    else
      host(MemCategory::grads) += b.host_grads;
    if (b.params_on_disk)
      params_on_disk.push_back(b.param_region());
    else
      host(b.host_params_category) += b.host_params;
    std::vector<bool> decays;
    for (const auto& t : tensors)
      if (t.trainable) decays.push_back(t.weight_decay);
    const auto ranges = l.layout.shard_ranges(stage == 0 ? 0 : shard, decays);
    state(MemCategory::other) +=  // the weight-decay ranges, where the optimizer runs
        static_cast<int64_t>(std::max<std::size_t>(1, ranges.size()) * sizeof(kernels::ElementRange));
    if (cfg.checkpoint.async && rank < shards) {  // this rank's checkpoint file (the first shard group writes)
      const int64_t states = (b.m > 0) + (b.v > 0);
      host(MemCategory::checkpoint_staging) +=
          ckpt::file_elements(l.layout, rank, shards) * (4 + states * dtype_size(cfg.optimizer.state_dtype)) +
          ckpt::file_elements(l.frozen, rank, shards) * dtype_size(cfg.precision.param);
    }
  }
  // The files, and the host buffers they stream through (a host-pool part each).
  plan.disk = offload::swap_file_bytes(on_disk) + offload::swap_file_bytes(params_on_disk) +
              offload::swap_file_bytes(grads_on_disk);
  if (const int64_t b = offload::swap_buffer_bytes(on_disk, cfg.offload.buffer_count); b > 0)
    host(MemCategory::optim_state) += b;
  if (const int64_t b = offload::swap_buffer_bytes(params_on_disk, cfg.offload.param_buffer_count); b > 0)
    host(MemCategory::params) += b;
  if (const int64_t b = offload::swap_buffer_bytes(grads_on_disk, cfg.offload.grad_buffer_count); b > 0)
    host(MemCategory::grads) += b;
  host(MemCategory::offload_staging) +=
      offload::kAccumulationStaging * accumulation_staging_bytes(largest_offloaded_shard, cfg);
  const PoolPlan p = pool_plan(largest, largest_trainable, static_cast<int>(units.size()), cfg);
  dev(MemCategory::gather_buffers) += p.gather_count * p.gather_bytes;
  dev(MemCategory::grads) += p.grad_count * p.grad_bytes;
  dev(MemCategory::other) += static_cast<int64_t>((units.size() + 1) * sizeof(float));  // the norm scratch
  dev(MemCategory::other) += kControlFloats * world * static_cast<int64_t>(sizeof(float));
  if (cpu_device)
    host(MemCategory::comm_scratch) =  // NCCL has none
        comm_streams(stage, cfg.zero.replicated(world)) * GlooComm::kScratchBytesPerStream;
  return plan;
}

}  // namespace zs
