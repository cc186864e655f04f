// The offloaded optimizer step (DESIGN §4). Each unit's reduced gradient shard goes to the host on a
// copy stream as soon as its reduce lands (its sum of squares taken on the device first, by the engine, so
// the host reads the gradients once: the step is bound by host memory traffic); once the global norm is
// known the CPU updates the units in forward order with the SIMD kernels and uploads each one as soon as
// it is done, so the next forward starts on unit 0 while later units are still being updated
// (streaming). When the update does not depend on the norm (no clipping, no loss scaling) streaming goes
// further: the CPU updates and uploads each unit right after it lands, behind the rest of the backward
// (early update); once the backward is over, the units it has not started yet are taken in forward
// order instead, so the next forward starts while the CPU finishes the last ones. Delayed mode
// (ZeRO-Offload's one-step-stale update) runs the whole CPU step behind the next forward and backward
// instead: the parameters a step computes with are two updates old, which changes the math.
//
// With the gradients on disk (offload.grads: nvme) the downloads land in a SwapCache's slots instead; the
// CPU worker hands each to the cache's writer once its copy is done, and the update takes it back from its
// slot or the disk, reading the next units' ahead.
//
// With accumulation (offload.accumulate: host) each micro-batch's reduced shard comes down as it lands:
// the first into the unit's host gradient shard, the others into one of kAccumulationStaging host buffers
// that a second CPU worker adds into it; after the last add that worker also takes the shard's sum of
// squares for the norm, which the device never sees whole.
//
// Streams: `download` and `upload` on the device (copy engines on a GPU; worker threads in the CPU build,
// whose "device" memory is a separate host pool, so ordering bugs show in CI), and a CPU worker for the
// step. Every hand-off is an event; the host blocks only where the next forward needs an update that the
// CPU has not finished yet.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/buffer.h"
#include "kernels/kernels.h"
#include "offload/state_swap.h"
#include "offload/swap_cache.h"

namespace zs::offload {

// One unit's shard on the host, and where its updated parameters go.
struct UnitShard {
  int64_t n = 0;            // elements in this rank's shard
  float* master = nullptr;  // f32, host (null with a StateSwap: the state is on disk)
  void* m = nullptr;        // optimizer state, host (null when the optimizer keeps none, or on disk)
  void* v = nullptr;
  void* grads[2] = {};            // reduce dtype, host; [1] is delayed mode's second slot (null with a
                                  // SwapCache of the gradients: on disk)
  void* host_params = nullptr;    // compute dtype, host, written by the update (null for f32 with the master
                                  // in memory: the master is it; null with a SwapCache: on disk)
  void* device_params = nullptr;  // where the updated shard is uploaded (null: the parameters stay on the host)
  const kernels::ElementRange* decay = nullptr;  // host
  int64_t num_decay = 0;
};

// Where the offloaded step's time went (Pipeline::take_timing): the CPU worker's time in updates and the
// bytes those moved (kernels::update_bytes_per_element), the host's time blocked in wait_params on an
// update the CPU had not finished (streaming: the next forward waiting for the CPU), with the state on
// disk the CPU worker's time waiting for its reads (the disk behind: more buffers, or a faster disk), with
// the parameters on disk the gathers' (SwapCache::Stats: the host's time blocked on reads), and with the
// gradients on disk the downloads' and the updates' (the host blocked for a free slot: write_wait_ms; the
// CPU worker for a read: wait_ms).
struct Timing {
  double update_ms = 0.0;
  double update_bytes = 0.0;
  int64_t updates = 0;
  double wait_ms = 0.0;
  double disk_wait_ms = 0.0;
  // Host accumulation: the accumulating worker's time in adds (and the last micro-batch's sums of squares),
  // and the host's time blocked for a free staging buffer (the adds behind the device).
  double accumulate_ms = 0.0, staging_wait_ms = 0.0;
  SwapCache::Stats param_disk, grad_disk;
};

// Host buffers a micro-batch's gradient shard is staged in before it is added up (Landing::add, ::last).
inline constexpr int kAccumulationStaging = 2;

// What a download is to its unit's host gradient shard: the whole of this step's gradients (no host
// accumulation), or one micro-batch of several: the first (copied in), a middle one or the last (added).
enum class Landing { whole, first, add, last };

// The CPU step's threads on a GPU machine when ZS_CPU_THREADS does not say: this rank's share of the
// node's cores, less one for the thread that drives the GPU (measured on an H200's 16-core host: the
// delayed step 552 -> 446 ms with 15 threads instead of 16). At least 1. Pure.
int default_cpu_threads(int cores, int ranks_on_node);

class Pipeline {
 public:
  // swap: every unit's master, m and v on disk (offload.optimizer: nvme), read ahead of each update and
  // written back behind it, in the order update() takes the units; no early update then. params: every
  // unit's compute-dtype shard on disk (offload.params: nvme): the update writes it there (through a slot
  // the next gather reads it from), and the gathers take it with param_swap()'s acquire and release.
  // grads: every unit's reduced gradient shard on disk (offload.grads: nvme, streaming, with a StateSwap):
  // each download lands in a slot that is written behind, and the update reads it back unless it is still
  // there (the last ones landed, which the forward order updates first).
  // staging: kAccumulationStaging host buffers of the largest unit's shard (reduce dtype) for the
  // micro-batches added up on the host (Landing::add and ::last); empty when nothing is.
  Pipeline(Device device, DType compute, DType reduce, DType state, bool delayed, std::vector<UnitShard> units,
           std::unique_ptr<StateSwap> swap = nullptr, std::unique_ptr<SwapCache> params = nullptr,
           std::unique_ptr<SwapCache> grads = nullptr, std::vector<void*> staging = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Unit u's reduced gradient shard at `device_grads` (complete at `reduced`, an event of the device)
  // goes to the host (in an early update, the CPU then updates and uploads it once the step's gradients
  // are complete: Landing::whole or ::last). Landing::add and ::last add it to the micro-batches before,
  // through a staging buffer (the host waits while both are still being added from: the CPU behind).
  // Returns the event after which the device buffer may be reused.
  Event& download(int u, const void* device_grads, Event* reduced, Landing landing = Landing::whole);
  // The sum of squares of unit u's gradient shard added up on the host (Landing::last), once it is there.
  float host_sum_squares(int u);
  // An event after every download enqueued so far: the device gradient buffers are free to reuse after it.
  Event& downloads_done();
  // Early update: this step's updates start as each gradient shard lands, with h and grad_scale (the
  // caller knows them before the norm: no clipping, no loss scaling; streaming only). Call before the
  // step's first download; update() is then not called for this step, finish_early() is.
  void update_early(const kernels::OptimizerHyper& h, float grad_scale);
  // Early update, once every unit's download has been enqueued (the backward is over) and the norm is
  // finite: the units the CPU has not started yet are updated in `order` (every unit once: the order the
  // next forward needs them) instead of the order they landed in. Returns at once.
  void finish_early(std::span<const int> order);
  // The units in the order the CPU updated them in the last step (complete once it is drained).
  const std::vector<int>& updated_order() const { return updated_order_; }
  // The state on disk, streaming: this step's reads start now, during the backward, in `order` (the order
  // update() will take), as far ahead as the buffers allow; once a step (later calls in the step do
  // nothing). update() must then take the same order, or skip() end the step. Does nothing without a
  // StateSwap or in delayed mode (whose reads follow the previous step's update).
  void read_ahead(std::span<const int> order);
  // A step without an update (overflow, a non-finite norm): the state read ahead goes back unchanged.
  void skip();
  // The step: every unit's update with h (h.step is the step number), its gradient multiplied by
  // grad_scale, in `order` (every unit once: the order the next forward needs them). Returns at once; the
  // CPU works behind it.
  void update(const kernels::OptimizerHyper& h, float grad_scale, std::span<const int> order);
  // Makes `stream` wait until unit u's parameters for the next forward are in place on the device
  // (device_params) or on the host (host_param_source); blocks the host until the CPU has updated u when
  // it has not yet (streaming).
  void wait_params(int u, Stream& stream);
  // Where unit u's current compute-dtype parameters are on the host: host_params, or the f32 master (not
  // with a SwapCache: param_swap()).
  const void* host_param_source(int u) const;
  // True when unit u's update, if one is queued, is done: its parameters may be read ahead.
  bool params_ready(int u) const { return updated_[static_cast<std::size_t>(u)]->query(); }
  // The Timing since the last call (updates still running count once they are done).
  Timing take_timing();
  // Blocks until nothing is in flight (copies, updates, uploads); rethrows a failure of the CPU step. A
  // read-ahead without its update is skipped (the state goes back unchanged).
  void drain();
  // Drains, and forgets a delayed update that was not uploaded (the parameters were just replaced).
  void discard_pending();
  // The units' state on disk, or null; between steps (after drain) its get/put read and write a unit's.
  StateSwap* swap() const { return swap_.get(); }
  // The units' parameters on disk, or null.
  SwapCache* param_swap() const { return params_.get(); }
  // The bytes this rank's files hold on the disk (state, parameters, gradients; 0 without any).
  int64_t disk_allocated() const;

 private:
  void upload(int u);       // enqueues unit u's updated shard to device_params
  void update_unit(int u);  // with step_
  // CPU worker, early update: updates and uploads u unless it already was this step.
  void update_once(int u);
  // CPU worker: blocks until unit u's gradients of this step are complete on the host.
  void wait_landed(int u);
  // Early update: queues u's update and upload behind what the CPU worker has.
  void submit_early(int u);
  // Accumulating worker: adds staging buffer k (its copy waited for) into u's host shard at dst; after the
  // last micro-batch, its sum of squares.
  void add_staged(int u, int k, void* dst, bool last);

  Device device_;
  DType compute_, reduce_, state_;
  bool delayed_;
  std::vector<UnitShard> units_;
  std::unique_ptr<StateSwap> swap_;
  std::unique_ptr<SwapCache> params_, grads_;
  std::unique_ptr<Stream> download_, upload_, cpu_;
  std::vector<std::unique_ptr<Event>> downloaded_, uploaded_, updated_;
  std::unique_ptr<Event> all_downloaded_;
  // Host accumulation: the staging buffers, each with the event of its copy (device) and of the add that
  // read it (CPU); the worker that adds (apart from the update's, so a delayed update runs beside it);
  // after each unit's last add, its sum of squares and an event.
  std::vector<void*> staging_;
  std::vector<std::unique_ptr<Event>> staged_, staging_free_, accumulated_;
  std::unique_ptr<Stream> accumulate_;
  std::vector<float> host_sums_;
  int next_staging_ = 0;
  struct StepArgs {
    kernels::OptimizerHyper h;
    float grad_scale = 1.0f;
    int slot = 0;  // the grads[] slot the update reads
  } step_;         // the update in progress; set while the CPU worker is idle
  // Early update. While the CPU worker runs, it alone reads and writes `done_` (unit u is updated when
  // done_[u] equals the step's epoch_) and `updated_order_`; the host sets `finishing_` in finish_early().
  std::vector<int64_t> done_;
  std::vector<int> updated_order_;
  int64_t epoch_ = 0;
  std::atomic<bool> finishing_{false};
  bool early_ = false;    // this step's downloads also update (from update_early to finish_early)
  int slot_ = 0;          // the grads[] slot this step's downloads fill (delayed mode alternates)
  bool pending_ = false;  // delayed: updated on the host, not uploaded yet
  // read_ahead(): this step's reads are queued, in ahead_order_ (sized once).
  bool ahead_ = false;
  std::vector<int> ahead_order_;
  // The gradients on disk: the step's update order, and where the CPU worker is in it (the reads ahead).
  std::vector<int> grad_order_;
  std::size_t grad_next_ = 0;
  // Timing, summed by the CPU worker (updates) and the host (waits); take_timing() reads and clears them.
  std::atomic<int64_t> update_ns_{0}, update_bytes_{0}, updates_{0}, wait_ns_{0}, disk_wait_ns_{0}, accumulate_ns_{0},
      staging_wait_ns_{0};
};

}  // namespace zs::offload
