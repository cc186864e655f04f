// The offloaded step's pipeline: downloads, updates and uploads, ordered by events.
#include "offload/pipeline.h"

#include <algorithm>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

namespace zs::offload {

int default_cpu_threads(int cores, int ranks_on_node) {
  return std::max(1, cores / std::max(1, ranks_on_node) - 1);
}

Pipeline::Pipeline(Device device, DType compute, DType reduce, DType state, bool delayed, std::vector<UnitShard> units,
                   std::unique_ptr<StateSwap> swap, std::unique_ptr<SwapCache> params, std::unique_ptr<SwapCache> grads,
                   std::vector<void*> staging)
    : device_(device),
      compute_(compute),
      reduce_(reduce),
      state_(state),
      delayed_(delayed),
      units_(std::move(units)),
      swap_(std::move(swap)),
      params_(std::move(params)),
      grads_(std::move(grads)),
      download_(make_stream(device)),
      upload_(make_stream(device)),
      cpu_(make_stream(Device::cpu())),
      all_downloaded_(make_event(device)),
      staging_(std::move(staging)),
      done_(units_.size(), 0) {
  ZS_CHECK(staging_.empty() || static_cast<int>(staging_.size()) == kAccumulationStaging,
           "offload: {} staging buffers for host accumulation, not {}", staging_.size(), kAccumulationStaging);
  ZS_CHECK(staging_.empty() || !grads_, "offload: host accumulation with the gradients on disk");
  if (!staging_.empty()) {
    accumulate_ = make_stream(Device::cpu());
    for (int k = 0; k < kAccumulationStaging; ++k) {
      staged_.push_back(make_event(device));
      staging_free_.push_back(make_event(Device::cpu()));
    }
    for (std::size_t u = 0; u < units_.size(); ++u) accumulated_.push_back(make_event(Device::cpu()));
    host_sums_.resize(units_.size());
  }
  updated_order_.reserve(units_.size());
  grad_order_.reserve(units_.size());
  for (std::size_t u = 0; u < units_.size(); ++u) {
    downloaded_.push_back(make_event(device));
    uploaded_.push_back(make_event(device));
    updated_.push_back(make_event(Device::cpu()));
  }
}

Pipeline::~Pipeline() {
  try {
    drain();
  } catch (const std::exception& e) {
    log::shutdown_failure("offload: the CPU step failed while shutting down", e);
  }
}

Event& Pipeline::download(int u, const void* device_grads, Event* reduced, Landing landing) {
  const auto i = static_cast<std::size_t>(u);
  const UnitShard& s = units_[i];
  const bool adds = landing == Landing::add || landing == Landing::last;
  const bool complete = landing == Landing::whole || landing == Landing::last;
  ZS_CHECK(landing == Landing::whole || !staging_.empty(),
           "offload: unit #{}: a micro-batch to add up on the host, without its staging buffers", u);
  if (reduced) download_->wait(*reduced);
  const std::size_t bytes = static_cast<std::size_t>(s.n) * dtype_size(reduce_);
  if (adds) {
    // Into the next staging buffer once the add that last read it is done (the host waits here only when
    // the adds fall two micro-batch shards behind), then added on the accumulating worker.
    const int k = next_staging_;
    next_staging_ = (k + 1) % kAccumulationStaging;
    const auto ki = static_cast<std::size_t>(k);
    const int64_t w0 = steady_ns();
    staging_free_[ki]->synchronize();
    staging_wait_ns_.fetch_add(steady_ns() - w0, std::memory_order_relaxed);
    memory_copy_async(staging_[ki], device_grads, bytes, *download_);
    download_->record(*staged_[ki]);
    accumulate_->submit([this, u, k, dst = s.grads[slot_], complete] { add_staged(u, k, dst, complete); });
    accumulate_->record(*staging_free_[ki]);
    if (complete) accumulate_->record(*accumulated_[i]);
    if (early_ && complete) submit_early(u);
    return *staged_[ki];
  }
  // Streaming: the CPU must be done reading the slot (the last step's update of u; normally long done).
  if (!delayed_) updated_[i]->synchronize();
  // With the gradients on disk: into a slot (the host waits while every slot is busy: the disk behind),
  // which the CPU worker hands to the writer once the copy has landed (before this step's update, which
  // it queues behind).
  void* host = grads_ ? grads_->begin_write(u) : s.grads[slot_];
  memory_copy_async(host, device_grads, bytes, *download_);
  Event& done = *downloaded_[i];
  download_->record(done);
  if (grads_)
    cpu_->submit([this, u] {
      downloaded_[static_cast<std::size_t>(u)]->synchronize();
      grads_->finish(u);
    });
  if (early_ && complete) submit_early(u);
  return done;
}

void Pipeline::submit_early(int u) {
  // Its update and upload right behind, while the device goes on with the backward.
  cpu_->submit([this, u] {
    if (!finishing_.load(std::memory_order_acquire)) update_once(u);
  });
  cpu_->record(*updated_[static_cast<std::size_t>(u)]);
}

void Pipeline::add_staged(int u, int k, void* dst, bool last) {
  const auto ki = static_cast<std::size_t>(k);
  const int64_t n = units_[static_cast<std::size_t>(u)].n;
  const Device cpu = Device::cpu();
  staged_[ki]->synchronize();  // its copy has landed
  const int64_t t0 = steady_ns();
  const TensorView part = TensorView::flat(staging_[ki], reduce_, n, cpu), sum = TensorView::flat(dst, reduce_, n, cpu);
  // The last micro-batch completes the shard: its sum of squares for the step's norm, in the same pass.
  if (last)
    kernels::add_sum_squares(cpu, part, sum, &host_sums_[static_cast<std::size_t>(u)]);
  else
    kernels::add(cpu, part, sum);
  accumulate_ns_.fetch_add(steady_ns() - t0, std::memory_order_relaxed);
}

float Pipeline::host_sum_squares(int u) {
  ZS_CHECK(!staging_.empty(), "offload: unit #{}'s gradients are not added up on the host", u);
  accumulated_[static_cast<std::size_t>(u)]->synchronize();
  return host_sums_[static_cast<std::size_t>(u)];
}

void Pipeline::wait_landed(int u) {
  const auto i = static_cast<std::size_t>(u);
  downloaded_[i]->synchronize();
  if (!staging_.empty()) accumulated_[i]->synchronize();
}

Event& Pipeline::downloads_done() {
  download_->record(*all_downloaded_);
  return *all_downloaded_;
}

void Pipeline::update_once(int u) {
  const auto i = static_cast<std::size_t>(u);
  if (done_[i] == epoch_) return;
  done_[i] = epoch_;
  wait_landed(u);
  update_unit(u);
  upload(u);
}

void Pipeline::update_early(const kernels::OptimizerHyper& h, float grad_scale) {
  ZS_CHECK(!delayed_, "offload: an early update is for streaming mode, not delayed");
  ZS_CHECK(!swap_, "offload: an early update takes units as they land; the state on disk is read in a known order");
  // The CPU worker is idle by now (the next forward waited for every unit it gathered), so the step's
  // arguments can change.
  cpu_->synchronize();
  step_ = {h, grad_scale, slot_};
  ++epoch_;
  updated_order_.clear();
  finishing_.store(false, std::memory_order_release);
  early_ = true;
}

void Pipeline::finish_early(std::span<const int> order) {
  ZS_CHECK(early_, "offload: finish_early without update_early in this step");
  ZS_CHECK(order.size() == units_.size(), "offload: the update order names {} units, not {}", order.size(),
           units_.size());
  // The CPU worker skips the queued per-landing updates it has not started; the same units are queued
  // again in forward order (each done once: update_once), so the first the next forward needs comes first.
  finishing_.store(true, std::memory_order_release);
  for (int u : order) {
    cpu_->submit([this, u] { update_once(u); });
    cpu_->record(*updated_[static_cast<std::size_t>(u)]);
  }
  early_ = false;
}

const void* Pipeline::host_param_source(int u) const {
  const UnitShard& s = units_[static_cast<std::size_t>(u)];
  return s.host_params ? s.host_params : s.master;
}

void Pipeline::upload(int u) {
  const UnitShard& s = units_[static_cast<std::size_t>(u)];
  if (!s.device_params) return;
  memory_copy_async(s.device_params, host_param_source(u), static_cast<std::size_t>(s.n) * dtype_size(compute_),
                    *upload_);
  upload_->record(*uploaded_[static_cast<std::size_t>(u)]);
}

void Pipeline::update_unit(int u) {
  const UnitShard& s = units_[static_cast<std::size_t>(u)];
  // The state: in host memory, or read from disk into a buffer ahead of this update (update() queued it).
  StateSwap::Parts state{s.master, s.m, s.v};
  if (swap_) {
    const int64_t w0 = steady_ns();
    state = swap_->acquire(u);
    disk_wait_ns_.fetch_add(steady_ns() - w0, std::memory_order_relaxed);
  }
  // The gradients on disk: from their slot (read now if it is in none), and the next units' read ahead.
  const void* grad = s.grads[step_.slot];
  if (grads_) {
    grad = grads_->acquire(u);
    const std::size_t end = std::min(grad_order_.size(), grad_next_ + static_cast<std::size_t>(grads_->count()));
    for (std::size_t i = ++grad_next_; i < end; ++i) grads_->prefetch(grad_order_[i]);
  }
  kernels::UpdateArgs a;
  a.n = s.n;
  a.param = static_cast<float*>(state[0]);
  a.grad = grad;
  a.grad_dtype = reduce_;
  a.grad_scale = step_.grad_scale;
  a.state1 = state[1];
  a.state2 = state[2];
  a.state_dtype = state_;
  if (s.host_params || params_) {  // bf16/f16 compute: the compute copy in the same pass (to disk: a slot)
    a.param_out = params_ ? params_->begin_write(u) : s.host_params;
    a.param_out_dtype = compute_;
  }
  a.decay_ranges = s.decay;
  a.num_decay_ranges = s.num_decay;
  const int64_t t0 = steady_ns();
  kernels::optimizer_update(Device::cpu(), step_.h, a);
  if (swap_) swap_->release(u);  // written back behind the next updates
  if (params_) params_->finish(u);
  if (grads_) grads_->release(u, nullptr, /*again=*/false);  // its slot takes the next read first
  update_ns_.fetch_add(steady_ns() - t0, std::memory_order_relaxed);
  update_bytes_.fetch_add(s.n * kernels::update_bytes_per_element(a), std::memory_order_relaxed);
  updates_.fetch_add(1, std::memory_order_relaxed);
  updated_order_.push_back(u);
}

void Pipeline::update(const kernels::OptimizerHyper& h, float grad_scale, std::span<const int> order) {
  ZS_CHECK(order.size() == units_.size(), "offload: the update order names {} units, not {}", order.size(),
           units_.size());
  // Wait for the CPU worker (streaming: the last step's updates, done by now unless a unit went ungathered;
  // delayed: the last step's update, which had this step's forward and backward to run), so the step's
  // arguments can change; the closures capture only [this, u].
  cpu_->synchronize();
  step_ = {h, grad_scale, slot_};
  updated_order_.clear();
  grad_order_.assign(order.begin(), order.end());
  grad_next_ = 0;
  if (ahead_) {  // the reads were queued in the backward, in this order
    ZS_CHECK(std::equal(order.begin(), order.end(), ahead_order_.begin(), ahead_order_.end()),
             "offload: the update's order differs from the read-ahead's (a bug)");
    ahead_ = false;
  } else if (swap_) {  // the reads run ahead of the updates, as far as the buffers allow
    for (int u : order) swap_->prefetch(u);
  }
  if (delayed_) {
    // The previous step's update has had a whole forward and backward to finish; its results go up now
    // and this step's update starts behind the next step (each unit once its upload has read the host copy).
    if (pending_)
      for (int u : order) upload(u);
    for (int u : order) {
      cpu_->submit([this, u] {
        const auto i = static_cast<std::size_t>(u);
        wait_landed(u);
        if (units_[i].device_params) uploaded_[i]->synchronize();
        update_unit(u);
      });
      cpu_->record(*updated_[static_cast<std::size_t>(u)]);
    }
    pending_ = true;
    slot_ = 1 - slot_;
    return;
  }
  for (int u : order) {  // the first unit the next forward needs is ready first
    cpu_->submit([this, u] {
      wait_landed(u);
      update_unit(u);
      upload(u);
    });
    cpu_->record(*updated_[static_cast<std::size_t>(u)]);
  }
}

void Pipeline::read_ahead(std::span<const int> order) {
  if (!swap_ || delayed_ || ahead_) return;
  // The CPU is done with the last step's units (the forward waited for each), so their jobs are ahead of
  // these in the swap's queue, as its order requires.
  ahead_order_.assign(order.begin(), order.end());
  for (int u : order) swap_->prefetch(u);
  ahead_ = true;
}

void Pipeline::skip() {
  if (!ahead_) return;
  for (int u : ahead_order_)
    cpu_->submit([this, u] {
      swap_->acquire(u);
      swap_->release(u, /*changed=*/false);
    });
  ahead_ = false;
}

void Pipeline::wait_params(int u, Stream& stream) {
  if (!delayed_) {  // its upload is enqueued after its update
    const int64_t t0 = steady_ns();
    updated_[static_cast<std::size_t>(u)]->synchronize();
    wait_ns_.fetch_add(steady_ns() - t0, std::memory_order_relaxed);
  }
  if (units_[static_cast<std::size_t>(u)].device_params) stream.wait(*uploaded_[static_cast<std::size_t>(u)]);
}

int64_t Pipeline::disk_allocated() const {
  return (swap_ ? swap_->file_allocated() : 0) + (params_ ? params_->file_allocated() : 0) +
         (grads_ ? grads_->file_allocated() : 0);
}

Timing Pipeline::take_timing() {
  constexpr auto relaxed = std::memory_order_relaxed;
  Timing t;
  t.update_ms = static_cast<double>(update_ns_.exchange(0, relaxed)) / 1e6;
  t.update_bytes = static_cast<double>(update_bytes_.exchange(0, relaxed));
  t.updates = updates_.exchange(0, relaxed);
  t.wait_ms = static_cast<double>(wait_ns_.exchange(0, relaxed)) / 1e6;
  t.disk_wait_ms = static_cast<double>(disk_wait_ns_.exchange(0, relaxed)) / 1e6;
  t.accumulate_ms = static_cast<double>(accumulate_ns_.exchange(0, relaxed)) / 1e6;
  t.staging_wait_ms = static_cast<double>(staging_wait_ns_.exchange(0, relaxed)) / 1e6;
  if (params_) t.param_disk = params_->take_stats();
  if (grads_) t.grad_disk = grads_->take_stats();
  return t;
}

void Pipeline::drain() {
  skip();
  if (accumulate_) accumulate_->synchronize();
  cpu_->synchronize();
  download_->synchronize();
  upload_->synchronize();
  if (swap_) swap_->drain();
  if (params_) params_->drain();
  if (grads_) grads_->drain();
}

void Pipeline::discard_pending() {
  drain();
  pending_ = false;
}

}  // namespace zs::offload
