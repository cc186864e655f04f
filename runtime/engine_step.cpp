// The engine's gradients and step: gradient buffers, reduce-scatter (or all-reduce) per unit, the global
// norm, clipping and loss scaling, and the shard update on the device or through the offload pipeline.
#include "runtime/engine.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"

namespace zs {

// ---- gradients -------------------------------------------------------------------------------------

int Engine::acquire_grad_buffer(UnitId id) {
  // Round robin over the buffers whose unit is done writing (its reduce-scatter may still be reading: wait
  // for it); a unit that keeps accumulating (a tied weight used twice in a step) keeps its buffer.
  const int n = static_cast<int>(grad_pool_.size());
  for (int k = 0; k < n; ++k) {
    const int b = (grad_pool_next_ + k) % n;
    PoolBuffer& pb = grad_pool_[static_cast<std::size_t>(b)];
    if (pb.owner >= 0) {
      // Its unit still writes it (it also holds it between reduces when it keeps accumulating a full
      // gradient; with sharded accumulation each micro-batch's reduce hands the buffer back).
      Unit& prev = *units_[static_cast<std::size_t>(pb.owner)];
      if (prev.grad_buffer == b && prev.grad_state != GradState::reducing && prev.grad_state != GradState::reduced)
        continue;
      consume(pb.last_reduce, &prev);
      if (pb.read_after_reduce) consume(*std::exchange(pb.read_after_reduce, nullptr));
      if (prev.grad_buffer == b) prev.grad_buffer = -1;
    }
    grad_pool_next_ = (b + 1) % n;
    pb.owner = id;
    memory_zero(pb.buf.data(), device_, pb.buf.bytes(), compute_stream_->native_handle());
    return b;
  }
  std::string held;
  for (const auto& pb : grad_pool_)
    held += (held.empty() ? "'" : ", '") + units_[static_cast<std::size_t>(pb.owner)]->name + "'";
  ZS_FAIL(
      "rank {}: unit '{}' needs a gradient buffer but all {} are held by units whose gradients were not reduced yet "
      "({}); call reduce_grads as soon as a unit's backward is done",
      comm_->rank(), units_[static_cast<std::size_t>(id)]->name, n, held);
}

TensorView Engine::grads(UnitId id, std::string_view tensor) {
  return grads(id, tensor_index(*units_.at(static_cast<std::size_t>(id)), tensor));
}

TensorView Engine::grads(UnitId id, int index) {
  ZS_CHECK(ready_, "grads: call init_params first");
  Unit& u = *units_.at(static_cast<std::size_t>(id));
  ZS_CHECK(u.grad_state != GradState::reducing && u.grad_state != GradState::reduced,
           "rank {}: grads('{}') after reduce_grads in the same step", comm_->rank(), u.name);
  if (u.grad_state == GradState::none) {
    if (!grad_pool_.empty()) u.grad_buffer = acquire_grad_buffer(id);
    u.grad_state = GradState::accumulating;
  }
  ZS_CHECK(index >= 0 && index < static_cast<int>(u.tensors.size()), "unit '{}' has no tensor #{}", u.name, index);
  ZS_CHECK(!u.is_frozen(index), "grads: tensor '{}' of unit '{}' is frozen (trainable=false): it has no gradient",
           u.tensors[static_cast<std::size_t>(index)].name, u.name);
  return TensorView{
      static_cast<char*>(grad_base(u)) + u.param_offset(index) * static_cast<int64_t>(dtype_size(reduce_)), reduce_,
      u.tensors[static_cast<std::size_t>(index)].shape, device_};
}

void Engine::reduce_grads(UnitId id) {
  Unit& u = *units_.at(static_cast<std::size_t>(id));
  ZS_CHECK(u.grad_state == GradState::accumulating, "rank {}: reduce_grads('{}') without grads() in this micro-batch",
           comm_->rank(), u.name);
  if (phase_ != Phase::backward) enter(Phase::backward);
  const bool last = ++u.micro_batches == cfg_.zero.grad_accumulation;
  if (!last && cfg_.zero.full_grads()) return;  // full gradients: reduced on the last micro-batch only
  check_agreement(Collective::reduce_grads, id);
  if (u.param_state == ParamState::gathering) {  // stages 1-2: a replica all-gather nobody waited for yet
    consume(u.pending, &u);
    u.param_state = ParamState::gathered;
  }
  const int64_t P = u.layout.padded, S = u.layout.shard;
  const int r = shard_rank(), stage = cfg_.zero.stage;
  Stream* rs = reduce_stream_.get();
  // Reduce-scatter within the shard group; with hybrid sharding the replicas of a shard then average it
  // (on the same stream, so the unit's pending work is the last of the two).
  auto reduce_scatter = [&](TensorView in, TensorView out) {
    Work w = shards_->reduce_scatter(in, out, ReduceOp::avg, rs);
    return replica_group_ ? replica_group_->all_reduce(out, out, ReduceOp::avg, rs) : w;
  };
  Event& ready = *grads_ready_[static_cast<std::size_t>(id)];
  compute_stream_->record(ready);  // the app's gradient writes come first
  rs->wait(ready);
  TensorView full = TensorView::flat(grad_base(u), reduce_, P, device_);
  // The shard's sum of squares for the step's global norm, behind its reduction on the same stream, so
  // the step finds it taken while the backward went on.
  float* norm_out = static_cast<float*>(norm_scratch_.data()) + id;
  auto sum_squares_behind = [&](TensorView shard) {
    const Device dev = device_;
    const DType t = reduce_;
    rs->submit([dev, data = shard.data, t, n = shard.numel(), out = norm_out, rs] {
      kernels::sum_squares(dev, TensorView::flat(data, t, n, dev), out, rs);
    });
  };
  const bool accumulated = cfg_.zero.sharded_accumulation();
  // Offloaded with offload.accumulate on the host: each micro-batch's shard goes down as it lands (below).
  const bool on_host = accumulated && u.pipe >= 0 && cfg_.host_accumulation();
  if (accumulated && !on_host) {
    // Every micro-batch is reduced: the first into the unit's shard, the others in place and added to it;
    // the buffer goes back to the pool after the add. The last one's sum is then the unit's reduced
    // gradient: updated on the device, or copied to the host from there. The last add takes the norm's
    // sum of squares in the same pass.
    TensorView acc = u.grads.view(reduce_, S);
    if (u.micro_batches == 1) {
      u.pending = reduce_scatter(full, acc);
    } else {
      TensorView part = full.slice(S * r, S);
      u.pending = reduce_scatter(full, part);
      const Device dev = device_;
      const DType t = reduce_;
      rs->submit([dev, src = part.data, dst = acc.data, t, S, out = last ? norm_out : nullptr, rs] {
        const TensorView from = TensorView::flat(src, t, S, dev), into = TensorView::flat(dst, t, S, dev);
        if (out)
          kernels::add_sum_squares(dev, from, into, out, rs);
        else
          kernels::add(dev, from, into, rs);
      });
    }
    Event& added = *grads_added_[static_cast<std::size_t>(id)];
    rs->record(added);
    PoolBuffer& pb = grad_pool_[static_cast<std::size_t>(u.grad_buffer)];
    pb.last_reduce = u.pending;
    pb.read_after_reduce = &added;
  }
  if (u.pipe >= 0 && (last || on_host)) {
    // In place, wherever the full gradients are (or the micro-batches' sum, reduced above), then this
    // rank's shard to the host for the CPU step.
    const bool device_sum = accumulated && !on_host;
    TensorView shard = device_sum ? u.grads.view(reduce_, S) : full.slice(S * r, S);
    if (last && early_update_ && !early_started_) {  // this step's first shard: the CPU updates each as it lands
      offload_->update_early(hyper(step_ + 1), static_cast<float>(1.0 / cfg_.zero.grad_accumulation));
      early_started_ = true;
    }
    // With the state on disk the step's reads start now, behind the backward (once the order is known).
    if (last && !update_order_.empty()) offload_->read_ahead(update_order_);
    if (!device_sum) u.pending = reduce_scatter(full, shard);
    Event& landed = *shard_ready_[static_cast<std::size_t>(id)];
    offload::Landing landing = offload::Landing::whole;
    if (on_host) {
      // The host adds the micro-batches up and takes the norm's sum of squares after the last.
      landing = u.micro_batches == 1 ? offload::Landing::first : last ? offload::Landing::last : offload::Landing::add;
    } else if (!device_sum) {  // (a device sum's was taken by its last add)
      // The norm from the device's copy, so the host, whose memory traffic bounds the offloaded step, reads
      // the gradients once (in the update); the copy, and so the buffer's reuse, waits for the sum.
      sum_squares_behind(shard);
    }
    rs->record(landed);
    Event& copied = offload_->download(u.pipe, shard.data, &landed, landing);
    if (u.grad_buffer >= 0 && !device_sum) {
      PoolBuffer& pb = grad_pool_[static_cast<std::size_t>(u.grad_buffer)];
      pb.last_reduce = u.pending;
      pb.read_after_reduce = &copied;
    }
  } else if (accumulated) {
    // (the micro-batch reduced into the shard: above)
  } else if (stage == 0) {
    u.pending = comm_->all_reduce(full, full, ReduceOp::avg, rs);
  } else if (u.grad_buffer < 0) {
    u.pending = reduce_scatter(full, full.slice(S * r, S));  // in place
  } else {
    u.pending = reduce_scatter(full, u.grads.view(reduce_, S));
    grad_pool_[static_cast<std::size_t>(u.grad_buffer)].last_reduce = u.pending;
  }
  if (!last) {  // micro-batches added up in the shard (or on the host): the next grads() takes a fresh buffer
    u.grad_buffer = -1;
    u.grad_state = GradState::none;
    return;
  }
  if (u.pipe < 0 && !accumulated) sum_squares_behind(grad_shard(u, cfg_.zero.full_grads()));
  u.grad_state = GradState::reducing;
}

// ---- the step ---------------------------------------------------------------------------------------

void Engine::enter(Phase p) {
  phase_ = p;
  MemoryLedger& l = MemoryLedger::global();
  if (!l.tracing()) return;
  static constexpr const char* kNames[] = {"idle", "forward", "backward", "step"};
  l.mark(fmt::format("{} {}", kNames[static_cast<int>(p)], step_ + 1));
}

StepStats Engine::step() {
  ZS_CHECK(ready_, "step: call init_params first");
  enter(Phase::step);
  const int stage = cfg_.zero.stage, r = comm_->rank();
  const int accum = cfg_.zero.grad_accumulation;
  const bool full_grads = cfg_.zero.full_grads();  // else each unit's reduced shard
  for (std::size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    ZS_CHECK(u.grad_state == GradState::reducing, "rank {}: step() but unit '{}' {}", r, u.name,
             u.grad_state == GradState::none && u.micro_batches == 0
                 ? "got no gradients this step (call grads and reduce_grads for every unit)"
                 : fmt::format("was reduced after {} of {} micro-batches", u.micro_batches, accum));
    wait_timed(u.pending, &u);
    // Sharded accumulation: the last add into the shard follows the reduce (offloaded: the copy waits).
    if (cfg_.zero.sharded_accumulation() && u.pipe < 0) consume(*grads_added_[i]);
    u.grad_state = GradState::reduced;
  }
  // Global gradient norm: per-unit sums of squares, one all-reduce over the shards. Each unit's sum was
  // taken behind its reduction (reduce_grads) into the device's scratch, or on the host after its last add.
  std::vector<float>& host = norm_host_;
  reduce_stream_->synchronize();
  // The gradient buffers are zeroed or handed to the next step's units (finish_step) only once their
  // shards are on the host.
  if (offload_) consume(offload_->downloads_done());
  memory_copy(host.data(), Device::cpu(), norm_scratch_.data(), device_, host.size() * sizeof(float));
  if (cfg_.host_accumulation())  // those units' sums were taken on the host, after their last add
    for (std::size_t i = 0; i < units_.size(); ++i)
      if (units_[i]->pipe >= 0) host[i] = offload_->host_sum_squares(units_[i]->pipe);
  float total = 0.0f;
  for (float s : host) total += s;
  if (stage >= 1) {
    TensorView t = norm_scratch_.view(DType::f32, num_units() + 1).slice(num_units(), 1);
    memory_copy(t.data, device_, &total, Device::cpu(), sizeof(float));
    Work w = shards_->all_reduce(t, t, ReduceOp::sum);  // the shards: replicas hold the same ones
    wait_timed(w);
    memory_copy(&total, Device::cpu(), t.data, device_, sizeof(float));
  }
  const double scale = scaling_ ? scaler_.scale : 1.0;
  const double norm = std::sqrt(static_cast<double>(total)) / accum / scale;
  StepStats st;
  st.loss_scale = scale;
  if (scaling_ && !std::isfinite(norm) && scaler_.at_minimum()) {
    if (offload_) offload_->drain();  // (as below: nothing in flight when the caller resumes)
    ZS_FAIL(
        "rank {}: step {}: the gradients overflow at the minimum loss scale (precision.min_loss_scale {}): every "
        "step from here on would be skipped; check the loss and the learning rate, lower min_loss_scale, or train "
        "in bf16",
        r, step_ + 1, scaler_.min_scale);
  }
  if (scaling_ && scaler_.update(!std::isfinite(norm))) {
    // Overflow: no update this step (dynamic: a smaller scale for the next); the scaled gradients are dropped.
    if (offload_) offload_->skip();
    st.skipped = true;
    st.grad_norm = norm;
    st.lr = cfg_.schedule.lr(cfg_.optimizer.lr, step_ + 1);
    st.step = step_;
    finish_step(full_grads);
    return st;
  }
  if (!std::isfinite(norm)) {
    // An early update has been changing the units as they landed (or, with the state on disk, reads have
    // been running ahead: they go back unchanged): let it finish before reporting, so nothing is in flight
    // when the caller resumes from a checkpoint.
    if (offload_) offload_->drain();
    std::string bad;
    for (std::size_t i = 0; i < units_.size(); ++i)
      if (!std::isfinite(host[i])) bad += (bad.empty() ? "" : ", ") + units_[i]->name;
    ZS_FAIL(
        "rank {}: step {}: the gradient norm is not finite (NaN or Inf in unit(s) {}); check the loss and the "
        "learning rate{}",
        r, step_ + 1, bad.empty() ? "on another rank" : bad,
        early_started_ ? " (the offloaded update had already changed the units reduced before it: resume from the "
                         "last checkpoint)"
                       : "");
  }
  const double clip =
      cfg_.optimizer.clip_grad_norm > 0 ? std::min(1.0, cfg_.optimizer.clip_grad_norm / (norm + 1e-6)) : 1.0;
  st.grad_norm = norm;
  st.lr = cfg_.schedule.lr(cfg_.optimizer.lr, step_ + 1);
  const kernels::OptimizerHyper h = hyper(step_ + 1);
  const auto grad_scale = static_cast<float>(clip / accum / scale);
  update_on_device(h, grad_scale, full_grads);  // the units whose optimizer is on the device (all, without offload)
  if (offload_) {
    // The CPU updates unit by unit in the order the next forward gathers them (an early update has done
    // so as each unit's gradients landed; the units it has not started yet now follow that order); each
    // replica (stages 1-2) is all-gathered again once its shard is back, at its gather in the next forward.
    if (update_order_.empty()) {  // first use in gather order (the recorded forward first), then the rest
      std::vector<bool> seen(units_.size(), false);
      auto add = [&](int u) {
        const Unit& unit = *units_[static_cast<std::size_t>(u)];
        if (seen[static_cast<std::size_t>(u)] || unit.pipe < 0) return;
        seen[static_cast<std::size_t>(u)] = true;
        update_order_.push_back(unit.pipe);
      };
      for (UnitId u : order_) add(u);
      for (int u = 0; u < num_units(); ++u) add(u);
    }
    if (early_started_)
      offload_->finish_early(update_order_);
    else
      offload_->update(h, grad_scale, update_order_);
    if (stage < 3)
      for (auto& up : units_)
        if (up->pipe >= 0) up->param_state = ParamState::updating;
  }
  ++step_;
  finish_step(full_grads);
  st.step = step_;
  if (cfg_.checkpoint.every_steps > 0 && step_ % cfg_.checkpoint.every_steps == 0)
    save_checkpoint(cfg_.checkpoint.dir, user_state_ ? user_state_() : "");
  return st;
}

kernels::OptimizerHyper Engine::hyper(int64_t step) const {
  kernels::OptimizerHyper h;
  h.kind = cfg_.optimizer.type;
  h.lr = static_cast<float>(cfg_.schedule.lr(cfg_.optimizer.lr, step));
  h.beta1 = h.kind == kernels::Optimizer::sgd ? cfg_.optimizer.momentum : cfg_.optimizer.beta1;
  h.beta2 = cfg_.optimizer.beta2;
  h.eps = cfg_.optimizer.eps;
  h.weight_decay = cfg_.optimizer.weight_decay;
  h.dampening = cfg_.optimizer.dampening;
  h.nesterov = cfg_.optimizer.nesterov;
  h.step = step;
  return h;
}

TensorView Engine::grad_shard(const Unit& u, bool full_grads) const {
  // The optimizer's gradient input: this rank's reduced shard (stage 0: the whole averaged gradients).
  const int64_t S = u.layout.shard;
  if (!full_grads || cfg_.zero.stage == 0) return u.grads.view(reduce_, S);
  return u.grads.view(reduce_, u.layout.padded).slice(S * shard_rank(), S);
}

void Engine::update_on_device(const kernels::OptimizerHyper& h, float grad_scale, bool full_grads) {
  const int stage = cfg_.zero.stage, r = shard_rank();
  if (std::none_of(units_.begin(), units_.end(), [](const auto& u) { return u->pipe < 0; })) return;
  for (auto& up : units_) {
    Unit& u = *up;
    if (u.pipe >= 0) continue;  // updated on the host
    const int64_t S = u.layout.shard, lo = stage == 0 ? 0 : S * r;
    kernels::UpdateArgs a;
    a.n = S;
    a.param = u.master.data() ? static_cast<float*>(u.master.data()) : static_cast<float*>(u.full_params.data()) + lo;
    TensorView g = grad_shard(u, full_grads);
    a.grad = g.data;
    a.grad_dtype = reduce_;
    a.grad_scale = grad_scale;
    a.state1 = u.m.data();
    a.state2 = u.v.data();
    a.state_dtype = cfg_.optimizer.state_dtype;
    if (u.master.data() && u.full_params.data()) {  // bf16/f16 compute at stages 0-2: fused cast into the replica
      a.param_out = static_cast<char*>(u.full_params.data()) + lo * static_cast<int64_t>(dtype_size(compute_));
      a.param_out_dtype = compute_;
    }
    a.decay_ranges = static_cast<const kernels::ElementRange*>(u.decay_ranges.data());
    a.num_decay_ranges = u.num_decay_ranges;
    kernels::optimizer_update(device_, h, a, compute_stream_.get());
  }
  // The next gathers read what the update wrote: the master (stage 3, cast on the gather stream) or the
  // replicas (stages 1-2, all-gathered below).
  compute_stream_->record(*update_done_);
  gather_stream_->wait(*update_done_);
  if (stage == 1 || stage == 2) {  // every rank updated its shard of the replicas: share them
    // Each unit's replica is complete once its all-gather lands; the next forward waits for it at gather()
    // (unit by unit, so the later units' gathers overlap the earlier units' compute).
    for (auto& up : units_) {
      if (up->pipe >= 0) continue;
      TensorView full = up->full_params.view(compute_, up->layout.padded);
      up->pending = shards_->all_gather(full.slice(up->layout.shard * r, up->layout.shard), full, gather_stream_.get());
      up->param_state = ParamState::gathering;
    }
  }
}

void Engine::finish_step(bool full_grads) {
  for (auto& up : units_) {
    Unit& u = *up;
    if (full_grads) memory_zero(u.grads.data(), device_, u.grads.bytes(), compute_stream_->native_handle());
    u.grad_state = GradState::none;
    u.micro_batches = 0;
    u.gathers_this_step = 0;
  }
  for (auto& pb : grad_pool_) {  // every reduce was waited for in step(): the pool is free again
    if (pb.owner >= 0) units_[static_cast<std::size_t>(pb.owner)]->grad_buffer = -1;
    pb.owner = -1;
  }
  recording_ = false;
  early_started_ = false;
  order_pos_ = 0;
  phase_ = Phase::idle;
}

}  // namespace zs
