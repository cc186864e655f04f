// The engine's parameters in the step: just-in-time gathers from the fixed pool, prefetch in the recorded
// order, the cross-rank agreement check, release, and read_param.
#include "runtime/engine.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"

namespace zs {

// ---- GatheredParams --------------------------------------------------------------------------------

GatheredParams::~GatheredParams() {
  if (engine_) engine_->release(unit_);
}

TensorView GatheredParams::tensor(std::string_view name) const {
  return tensor(engine_->tensor_index(engine_->unit(unit_), name));
}

TensorView GatheredParams::tensor(int index) const {
  const Unit& u = engine_->unit(unit_);
  ZS_CHECK(index >= 0 && index < static_cast<int>(u.tensors.size()), "unit '{}' has no tensor #{}", u.name, index);
  char* base = static_cast<char*>(engine_->param_base(u));
  return TensorView{base + u.param_offset(index) * static_cast<int64_t>(dtype_size(engine_->compute_)),
                    engine_->compute_, u.tensors[static_cast<std::size_t>(index)].shape, engine_->device_};
}

// ---- gather / release ------------------------------------------------------------------------------

int Engine::tensor_index(const Unit& unit, std::string_view name) const {
  for (std::size_t i = 0; i < unit.tensors.size(); ++i)
    if (unit.tensors[i].name == name) return static_cast<int>(i);
  std::vector<std::string_view> names;
  for (const auto& t : unit.tensors) names.push_back(t.name);
  ZS_FAIL("unit '{}' has no tensor '{}'; its tensors: {}", unit.name, name, fmt::join(names, ", "));
}

void* Engine::param_base(const Unit& u) const {
  if (cfg_.zero.stage <= 2) return u.full_params.data();
  ZS_CHECK(u.gather_buffer >= 0, "rank {}: unit '{}' is not gathered", comm_->rank(), u.name);
  return gather_pool_[static_cast<std::size_t>(u.gather_buffer)].buf.data();
}

void* Engine::grad_base(const Unit& u) const {
  if (u.grad_buffer >= 0) return grad_pool_[static_cast<std::size_t>(u.grad_buffer)].buf.data();
  return u.grads.data();
}

void Engine::wait_timed(Work& w, const Unit* u) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    w.wait();
  } catch (const Error& e) {
    if (!u) throw;
    // The communicator names the op, its sequence number, the group and the peer; the engine adds the unit.
    std::string_view what = e.what();
    const std::string self = fmt::format("rank {}: ", comm_->rank());
    if (what.starts_with(self)) what.remove_prefix(self.size());
    ZS_FAIL("{}step {}: a collective of unit '{}' failed: {}", self, step_ + 1, u->name, what);
  }
  exposed_comm_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Engine::consume(Work& w, const Unit* u) {
  if (device_.is_cpu())
    wait_timed(w, u);  // CPU compute runs on the host: wait for the collective itself
  else if (Event* e = w.event())
    compute_stream_->wait(*e);
}

void Engine::consume(Event& e) {
  if (device_.is_cpu())
    e.synchronize();
  else
    compute_stream_->wait(e);
}

int Engine::acquire_gather_buffer(UnitId for_unit) {
  for (std::size_t i = 0; i < gather_pool_.size(); ++i)
    if (gather_pool_[i].owner < 0) return static_cast<int>(i);
  // Evict a unit that is gathered but not held (prefetched, or kept after forward).
  for (std::size_t i = 0; i < gather_pool_.size(); ++i) {
    Unit& v = *units_[static_cast<std::size_t>(gather_pool_[i].owner)];
    if (v.holders == 0) {
      wait_timed(v.pending, &v);
      v.param_state = ParamState::sharded;
      v.gather_buffer = -1;
      gather_pool_[i].owner = -1;
      return static_cast<int>(i);
    }
  }
  std::string held;
  for (const auto& b : gather_pool_)
    held += (held.empty() ? "" : ", ") + units_[static_cast<std::size_t>(b.owner)]->name;
  ZS_FAIL(
      "rank {}: gathering unit '{}' would make {} units gathered at once, over zero.max_live_units = {} (held: {}); "
      "release a GatheredParams handle first, or raise zero.max_live_units",
      comm_->rank(), units_[static_cast<std::size_t>(for_unit)]->name, gather_pool_.size() + 1, gather_pool_.size(),
      held);
}

void Engine::read_params_ahead(std::size_t from) {
  if (recording_) return;  // the order is not known yet
  offload::SwapCache& disk = *offload_->param_swap();
  const auto end = std::min(order_.size(), from + static_cast<std::size_t>(disk.count() - 1));
  for (std::size_t i = from; i < end; ++i) {
    const int pipe = units_[static_cast<std::size_t>(order_[i])]->pipe;
    // Not a unit the CPU is still updating: its read would bring in the shard the update replaces.
    if (pipe >= 0 && offload_->params_ready(pipe)) disk.prefetch(pipe);
  }
}

void Engine::issue_gather(UnitId id, std::size_t next) {
  Unit& u = *units_[static_cast<std::size_t>(id)];
  const int b = acquire_gather_buffer(id);
  PoolBuffer& pb = gather_pool_[static_cast<std::size_t>(b)];
  pb.owner = id;
  u.gather_buffer = b;
  const int64_t P = u.layout.padded, S = u.layout.shard, PF = u.frozen.padded, SF = u.frozen.shard;
  const int r = shard_rank();
  TensorView all = pb.buf.view(compute_, P + PF);
  gather_stream_->wait(*pb.free_after);  // compute is done with the buffer's previous unit
  Stream* gs = gather_stream_.get();
  const Device dev = device_;
  // Each rank writes its shard into its own slot (the master cast to the compute dtype, or the compute-dtype
  // shard copied, from the device or the host), then all-gathers in place; frozen tensors follow from
  // their own shard. The stream keeps the order, so waiting for the last collective waits for both.
  auto gather_part = [&](const void* shard, DType dtype, int64_t offset, int64_t padded, int64_t shard_len) {
    TensorView full = all.slice(offset, padded), slot = full.slice(shard_len * r, shard_len);
    if (dtype == compute_) {
      memory_copy_async(slot.data, shard, slot.bytes(), *gs);
    } else {
      void* src = const_cast<void*>(shard);
      const DType to = compute_;
      gs->submit([dev, src, dtype, to, out = slot.data, shard_len, gs] {
        kernels::cast(dev, TensorView::flat(src, dtype, shard_len, dev), TensorView::flat(out, to, shard_len, dev), gs);
      });
    }
    u.pending = shards_->all_gather(slot, full, gs);
  };
  if (u.pipe >= 0) {  // the CPU step's output: on the device (param_shard), or on the host (offload.params)
    offload_->wait_params(u.pipe, *gs);
    if (offload::SwapCache* disk = offload_->param_swap()) {  // offload.params: nvme: a slot, read if need be
      gather_part(disk->acquire(u.pipe), compute_, 0, P, S);
      // The step's last gather of the unit (the backward's) frees its slot for the reads ahead: the next
      // forward takes the shard the CPU step writes.
      const bool again =
          recording_ || std::find(order_.begin() + static_cast<std::ptrdiff_t>(std::min(next, order_.size())),
                                  order_.end(), id) != order_.end();
      disk->release(u.pipe, gs, again);
      read_params_ahead(next);
    } else {
      gather_part(u.param_shard.data() ? u.param_shard.data() : offload_->host_param_source(u.pipe), compute_, 0, P, S);
    }
  } else {
    gather_part(u.master.data(), DType::f32, 0, P, S);
  }
  if (PF > 0) gather_part(u.frozen_shard.data(), compute_, P, PF, SF);
  u.param_state = ParamState::gathering;
}

void Engine::prefetch_after(UnitId id) {
  const bool replicas = cfg_.zero.stage < 3 && offload_;  // stages 1-2: replicas that wait for their update
  if ((cfg_.zero.stage != 3 && !replicas) || recording_ || cfg_.zero.prefetch == 0) return;
  int issued = 0;
  for (std::size_t i = order_pos_; i < order_.size() && issued < cfg_.zero.prefetch; ++i) {
    Unit& v = *units_[static_cast<std::size_t>(order_[i])];
    if (order_[i] == id) continue;
    ++issued;
    if (replicas) {
      if (v.param_state == ParamState::updating) refresh_replica(order_[i]);
      continue;
    }
    if (v.param_state != ParamState::sharded) continue;
    const bool free =
        std::any_of(gather_pool_.begin(), gather_pool_.end(), [](const PoolBuffer& b) { return b.owner < 0; });
    if (!free) return;
    issue_gather(order_[i], i + 1);
  }
}

void Engine::check_agreement(Collective op, UnitId id) {
  if (!(recording_ || check_collectives_) || comm_->size() == 1) return;
  const int n = comm_->size();
  const Unit& u = *units_[static_cast<std::size_t>(id)];
  const int64_t bytes = op == Collective::gather
                            ? (u.layout.padded + u.frozen.padded) * static_cast<int64_t>(dtype_size(compute_))
                            : u.layout.padded * static_cast<int64_t>(dtype_size(reduce_));
  const int64_t seq = collectives_checked_++;
  constexpr int64_t k24 = int64_t{1} << 24;  // exact integers travel as f32 in 24-bit pieces
  auto fingerprint = [&](const float* f) {
    return fmt::format("{} #{} of unit '{}' ({} bytes)",
                       static_cast<Collective>(f[0]) == Collective::gather ? "gather" : "reduce_grads",
                       static_cast<int64_t>(f[2]),
                       f[1] >= 0 && f[1] < num_units() ? units_[static_cast<std::size_t>(f[1])]->name : "?",
                       static_cast<int64_t>(f[3]) * k24 + static_cast<int64_t>(f[4]));
  };
  const std::vector<float> mine{static_cast<float>(static_cast<int>(op)), static_cast<float>(id),
                                static_cast<float>(seq % k24), static_cast<float>(bytes / k24),
                                static_cast<float>(bytes % k24)};
  const std::vector<float> seen = all_gather_host(mine);
  for (int r = 0; r < n; ++r) {
    const float* theirs = seen.data() + 5 * static_cast<std::size_t>(r);
    if (std::equal(mine.begin(), mine.end(), theirs)) continue;
    ZS_FAIL(
        "rank {}: the ranks' collectives differ: rank {} is at {} while rank {} is at {}; every rank must gather "
        "and reduce the same units in the same order",
        comm_->rank(), comm_->rank(), fingerprint(mine.data()), r, fingerprint(theirs));
  }
}

void Engine::set_gather_order(std::vector<UnitId> order) {
  for (UnitId u : order) ZS_CHECK(u >= 0 && u < num_units(), "set_gather_order: no unit {}", u);
  order_ = std::move(order);
  update_order_.clear();
  recording_ = false;
}

void Engine::refresh_replica(UnitId id) {
  Unit& u = *units_[static_cast<std::size_t>(id)];
  const int64_t S = u.layout.shard;
  offload_->wait_params(u.pipe, *gather_stream_);
  TensorView full = u.full_params.view(compute_, u.layout.padded);
  u.pending = shards_->all_gather(full.slice(S * shard_rank(), S), full, gather_stream_.get());
  u.param_state = ParamState::gathering;
}

GatheredParams Engine::gather(UnitId id) {
  ZS_CHECK(ready_, "gather: call init_params first");
  ZS_CHECK(id >= 0 && id < num_units(), "gather: no unit {}", id);
  // Below stage 3 a gather moves nothing, unless an offloaded update must come back first.
  if (cfg_.zero.stage == 3 || offload_) check_agreement(Collective::gather, id);
  Unit& u = *units_[static_cast<std::size_t>(id)];
  ZS_CHECK(!(early_started_ && u.pipe >= 0 && u.grad_state == GradState::reducing),
           "rank {}: gather('{}') after its reduce_grads in the same step: with the optimizer offloaded (and no "
           "clipping) its update starts as soon as its gradients are reduced, so its parameters are changing; "
           "gather it before reduce_grads, or after step()",
           comm_->rank(), u.name);
  ++u.gathers_this_step;
  if (phase_ == Phase::idle) enter(Phase::forward);
  if (recording_) {
    order_.push_back(id);
  } else {
    // Follow the recorded order; a unit found later in it moves the position there.
    auto it =
        std::find(order_.begin() + static_cast<std::ptrdiff_t>(std::min(order_pos_, order_.size())), order_.end(), id);
    if (it != order_.end()) order_pos_ = static_cast<std::size_t>(it - order_.begin()) + 1;
  }
  if (cfg_.zero.stage == 3 && u.param_state == ParamState::sharded) issue_gather(id, order_pos_);
  if (u.param_state == ParamState::updating) refresh_replica(id);
  prefetch_after(id);  // the next units' all-gathers overlap this unit's compute
  // Stage 3: this gather's all-gather. Stages 1-2: the previous step's all-gather of the updated replica.
  if (u.param_state == ParamState::gathering) {
    consume(u.pending, &u);
    u.param_state = ParamState::gathered;
  }
  ++u.holders;
  return GatheredParams(this, id);
}

void Engine::release(UnitId id) {
  Unit& u = *units_[static_cast<std::size_t>(id)];
  if (--u.holders > 0 || cfg_.zero.stage != 3) return;
  // reshard_after_forward=false keeps a unit gathered from its forward to its backward.
  if (!cfg_.zero.reshard_after_forward && u.gathers_this_step == 1) return;
  PoolBuffer& pb = gather_pool_[static_cast<std::size_t>(u.gather_buffer)];
  compute_stream_->record(*pb.free_after);
  pb.owner = -1;
  u.gather_buffer = -1;
  u.param_state = ParamState::sharded;
}

std::vector<float> Engine::read_param(UnitId id, std::string_view tensor) {
  const Unit& u = *units_.at(static_cast<std::size_t>(id));
  const int i = tensor_index(u, tensor), r = shard_rank(), stage = cfg_.zero.stage;
  const bool frozen = u.is_frozen(i);
  const FlatLayout& l = frozen ? u.frozen : u.layout;
  const auto& slot = l.slots[static_cast<std::size_t>(u.slot_of[static_cast<std::size_t>(i)])];
  // Trainable tensors are read from the f32 master, frozen ones from their compute-dtype copy; either a
  // full replica is at hand, or this rank's shard is all-gathered into a temporary buffer.
  const DType t = frozen ? compute_ : DType::f32;
  const char* full = nullptr;
  const char* shard = nullptr;
  const bool on_disk = !frozen && u.pipe >= 0 && offload_->swap();  // offload.optimizer: nvme: read below
  if (frozen) {
    if (stage <= 2)
      full = static_cast<const char*>(u.full_params.data()) + u.layout.padded * static_cast<int64_t>(dtype_size(t));
    else
      shard = static_cast<const char*>(u.frozen_shard.data());
  } else if (!on_disk) {
    const char* master = static_cast<const char*>(u.master.data() ? u.master.data() : u.full_params.data());
    if (stage == 0)
      full = master;
    else
      shard = u.master.data() ? master : master + l.shard * r * 4;
  }
  compute_stream_->synchronize();
  if (offload_) offload_->drain();  // the master is on the host, maybe still being updated
  if (on_disk) shard = static_cast<const char*>(offload_->swap()->get(u.pipe)[0]);
  Buffer tmp;
  if (!full) {
    tmp = Buffer(l.padded * dtype_size(t), MemoryKind::device, device_, MemCategory::other);
    TensorView fv = tmp.view(t, l.padded);
    memory_copy(fv.slice(l.shard * r, l.shard).data, device_, shard, device_, l.shard * dtype_size(t));
    shards_->all_gather(fv.slice(l.shard * r, l.shard), fv).wait();
    full = static_cast<const char*>(tmp.data());
  }
  std::vector<uint8_t> raw(static_cast<std::size_t>(slot.numel) * dtype_size(t));
  memory_copy(raw.data(), Device::cpu(), full + slot.offset * static_cast<int64_t>(dtype_size(t)), device_, raw.size());
  std::vector<float> out(static_cast<std::size_t>(slot.numel));
  for (std::size_t e = 0; e < out.size(); ++e) out[e] = load_as_f32(raw.data(), t, e);
  return out;
}

}  // namespace zs
