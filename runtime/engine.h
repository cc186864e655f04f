// Engine: the public training API. Units are declared, parameters initialised, then each step gathers
// units just in time, takes the app's gradients, reduces them and updates this rank's shards.
//
//   zs::Engine engine(cfg);                       // joins the job zsrun started
//   auto h0 = engine.add_unit("h.0", {{"w", {53, 37}}, {"b", {53}, true, false}});
//   engine.init_params(zs::init::normal(0.02f, 1337));
//   for each step: forward:  { auto p = engine.gather(u); ... p.tensor("w") ... }
//                  backward: { auto p = engine.gather(u); auto g = engine.grads(u); ...; engine.reduce_grads(u); }
//                  zs::StepStats s = engine.step();
//
// Gradients: the app adds the gradient of its micro-batch's mean loss into grads(u); the engine averages
// over ranks and over `zero.grad_accumulation` micro-batches.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/bootstrap.h"
#include "kernels/kernels.h"
#include "offload/host_pool.h"
#include "offload/pipeline.h"
#include "optim/loss_scaler.h"
#include "runtime/config.h"
#include "runtime/file_io.h"
#include "runtime/memory_plan.h"
#include "sharding/init.h"
#include "sharding/unit.h"

namespace zs {
namespace ckpt {
struct Manifest;
struct TensorEntry;
}  // namespace ckpt

using UnitId = int;

struct StepStats {
  int64_t step = 0;        // completed optimizer steps
  double grad_norm = 0.0;  // global, before clipping
  bool skipped = false;
  double loss_scale = 1.0;
  double lr = 0.0;
};

// This process's memory by ledger category, on the engine's device and on the host (current and peak).
struct MemoryReport {
  Device device;
  std::array<MemStats, kMemCategoryCount> on_device{}, on_host{};
  MemStats device_total, host_total;
};

class Engine;
class AsyncCheckpoint;

// The gathered (full) parameters of one unit in the compute dtype; released when destroyed.
class GatheredParams {
 public:
  GatheredParams(GatheredParams&& o) noexcept : engine_(o.engine_), unit_(o.unit_) { o.engine_ = nullptr; }
  GatheredParams& operator=(GatheredParams&&) = delete;
  GatheredParams(const GatheredParams&) = delete;
  ~GatheredParams();
  TensorView tensor(std::string_view name) const;
  TensorView tensor(int index) const;

 private:
  friend class Engine;
  GatheredParams(Engine* e, UnitId u) : engine_(e), unit_(u) {}
  Engine* engine_;
  UnitId unit_;
};

class Engine {
 public:
  // Joins the job from the environment (zsrun, Slurm, mpirun or a lone process).
  explicit Engine(const Config& cfg);
  // Uses an existing group (e.g. one the program already joined). The group must outlive the engine.
  Engine(const Config& cfg, Comm& world);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  UnitId add_unit(std::string name, std::vector<TensorSpec> tensors);
  // Allocates every buffer (sizes are fixed from here on) and fills the parameters. Collective.
  void init_params(const init::Initializer& init);
  // The same with an initialiser per tensor, chosen by its "unit.tensor" name (e.g. ones for norm gains).
  using InitRule = std::function<init::Initializer(std::string_view name)>;
  void init_params(const InitRule& rule);
  // The same, with values from safetensors holding every "unit.tensor" with its declared shape (F32, BF16,
  // F16 or F64): one file, or Hugging Face's sharded layout (its model.safetensors.index.json, or the
  // directory holding it). Each rank reads only its own shards; replicas are completed by all-gather.
  void load_weights(const std::string& path);
  // The reverse: every parameter, full, as "unit.tensor" in safetensors that rank 0 writes (f32, or bf16
  // rounded from the f32 master). Collective; streams tensor by tensor, never holding the model. With
  // max_file_bytes > 0, `path` is a directory that gets Hugging Face's sharded layout: files
  // model-0000k-of-0000N.safetensors of at most that many bytes (a larger tensor alone in its file) and
  // model.safetensors.index.json.
  void save_weights(const std::string& path, DType dtype = DType::f32, int64_t max_file_bytes = 0);

  // Optional: the order of gathers in a step (forward then backward), instead of recording it on the
  // first step; prefetch follows it.
  void set_gather_order(std::vector<UnitId> order);
  GatheredParams gather(UnitId u);
  // The unit's full gradient buffer, one view per tensor (reduce dtype), zeroed at the start of a step (and
  // of each micro-batch, when stages 2-3 reduce every micro-batch): the app adds its gradients into it.
  TensorView grads(UnitId u, std::string_view tensor);
  TensorView grads(UnitId u, int index);
  void reduce_grads(UnitId u);
  StepStats step();
  // Blocks until everything the engine has in flight is done: collectives, prefetched gathers, the
  // offloaded CPU update and its uploads (step() returns before those). Between steps; collective. For
  // timing a run of steps, or before reading parameters from another thread. (A checkpoint.async save is
  // not waited for here: wait_checkpoint.)
  void synchronize();

  // Checkpoints (DESIGN §8; the format is in runtime/checkpoint.h). Collective; call between steps.
  // save_checkpoint writes step steps_done() to root/step-N and points root/latest at it, keeping the newest
  // checkpoint.keep; `user_state` is the application's own (data position, RNG), returned by load. A failure
  // on any rank (disk full, a dead peer) leaves the previous checkpoint as it was and throws on every rank.
  void save_checkpoint(const std::string& root, const std::string& user_state = "");
  // With checkpoint.async, save_checkpoint copies this rank's part to host memory and returns; a thread
  // writes it and rank 0 commits once every rank's file is in. wait_checkpoint blocks until that save is
  // committed, and throws, on every rank alike, when it failed (the previous checkpoint stays the latest).
  // save_checkpoint and load_checkpoint wait first; the destructor waits and logs a failure. Not collective.
  void wait_checkpoint();
  // Loads a checkpoint root (its latest) or one step directory, saved at any world size and stage: instead
  // of init_params, or between steps. Every file this rank reads is checked (size, xxHash64), and every rank
  // agrees, before any parameter changes. Returns the saved user_state.
  std::string load_checkpoint(const std::string& dir);
  // For periodic saving (checkpoint.every_steps > 0, from step()): where the user state comes from.
  void set_user_state(std::function<std::string()> f) { user_state_ = std::move(f); }

  // The full f32 value of one parameter tensor (gathers it; collective over the group). For tests and export.
  std::vector<float> read_param(UnitId u, std::string_view tensor);

  // With precision.loss_scale: dynamic, multiply the loss (so every gradient) by this before backward;
  // 1 otherwise.
  double loss_scale() const { return scaling_ ? scaler_.scale : 1.0; }
  // Seconds the host has spent blocked on collectives (gathers, reductions, the step's all-reduce) since
  // the last reset: the communication that compute did not hide.
  double exposed_comm_seconds() const { return exposed_comm_s_; }
  void reset_exposed_comm() { exposed_comm_s_ = 0; }
  // With offload.optimizer: cpu, where the offloaded step's time went since the last call (the CPU's update
  // time and bytes, the host's time blocked on the CPU before a gather); zeros otherwise. Updates still
  // running count at the next call (synchronize() first to count them all).
  offload::Timing take_offload_timing() { return offload_ ? offload_->take_timing() : offload::Timing{}; }
  MemoryReport memory() const;
  // What init_params allocates on this rank, by category (runtime/memory_plan.h; zsmem predicts with it).
  MemoryPlan memory_plan() const;
  // What zsmem measure reads: this rank's ledger (current and peak by category), the engine's memory plan
  // (with the declared activations) and the process's peak RSS, as JSON in dir/rank-N.json. Written at
  // destruction when ZS_MEMORY_REPORT=dir.
  void write_memory_report(const std::string& dir) const;
  // The program's own activation buffers on the device and on the host (ledger category `activations`,
  // e.g. zsmem's family formulas for them), which the memory report then plans beside the engine's: zsmem
  // measure compares the whole device and host with the ledger.
  void declare_activations(int64_t device_bytes, int64_t host_bytes = 0) {
    declared_activations_ = {device_bytes, host_bytes};
  }
  // Tensor bytes this rank read in load_weights (its own shards, not the model).
  uint64_t loaded_bytes() const { return last_load_bytes_; }
  const Config& config() const { return cfg_; }
  // The stream the app's kernels run on (CUDA: its native_handle() is the cudaStream_t to launch on): a
  // gathered unit is ready on it, and reduce_grads takes the gradients written on it. Host code that reads
  // or writes gathered parameters or gradients directly synchronizes it first.
  Stream& compute_stream() { return *compute_stream_; }
  Comm& comm() { return *comm_; }
  Device device() const { return device_; }
  int64_t steps_done() const { return step_; }
  const Unit& unit(UnitId u) const { return *units_.at(static_cast<std::size_t>(u)); }
  int num_units() const { return static_cast<int>(units_.size()); }

 private:
  friend class GatheredParams;
  void plan_layouts();  // each unit's flat layouts (pure; no allocation)
  // Throws, naming the need and what is available, when the memory plan cannot fit.
  void check_fits(const MemoryPlan& plan) const;
  void make_streams();
  // Hybrid sharding (zero.hybrid_group: g): shards live in groups of g consecutive ranks and are replicated
  // across the groups. Without it the shard group is the world.
  void check_hybrid() const;  // g divides the world, stage >= 1
  int shard_size() const;     // ranks a unit is sharded over
  int shard_rank() const;     // this rank's shard index
  void make_groups();         // collective: the shard group and the replica group (hybrid only)
  void setup();
  // Fills this rank's shards: source(tensor index, first element, count, out) gives f32 values.
  using ValueSource = std::function<void(const Unit&, int, int64_t, int64_t, float*)>;
  // States (which = 1: m, 2: v) likewise; without a source they start at zero.
  using StateSource = std::function<void(const Unit&, int, int, int64_t, int64_t, float*)>;
  void install(const ValueSource& source, const StateSource& states = nullptr);
  // Checkpoint helpers (engine_checkpoint.cpp).
  ckpt::Manifest describe_checkpoint() const;
  std::vector<ckpt::TensorEntry> tensor_entries() const;  // the model's tensors, in order, without pieces
  struct RankFile;  // this rank's checkpoint file: its tensors, and where their bytes are now
  RankFile rank_file(const ckpt::Manifest& m) const;
  FileDigest write_rank_file(const std::string& path, const ckpt::Manifest& m);
  std::size_t stage_rank_file(const RankFile& f);  // checkpoint.async: into ckpt_staging_; returns the bytes
  void copy_part(void* dst, const RankFile& f, std::size_t part);  // one part of its bytes, to host memory
  // With checkpoint.every_steps: every writing rank can create checkpoint.dir and a file in it (collective).
  void check_checkpoint_dir();
  void quiesce(const char* op);  // between steps: nothing in flight, nothing held
  // Every rank's `mine` (same length on all), in rank order; for small control messages.
  std::vector<float> all_gather_host(const std::vector<float>& mine);
  // The control messages' buffer, allocated at set-up (after the fit check) or at its first use (a load's
  // verdicts come before set-up).
  Buffer& control();
  // Throws on every rank, naming the failed ones, unless every rank passes ok.
  void agree(bool ok, const std::string& what, const std::string& error);
  void release(UnitId u);
  int tensor_index(const Unit& unit, std::string_view name) const;
  void issue_gather(UnitId u, std::size_t next);  // next: the position in order_ after this gather
  // offload.params: nvme: starts the reads of the units the gathers from order_[from] on will want.
  void read_params_ahead(std::size_t from);
  int acquire_gather_buffer(UnitId for_unit);
  int acquire_grad_buffer(UnitId u);
  void* param_base(const Unit& unit) const;  // where the unit's full compute params are now
  void* grad_base(const Unit& unit) const;   // where the unit's full grads are now
  void prefetch_after(UnitId u);
  void consume(Work& w, const Unit* u = nullptr);  // make compute wait for a collective (of unit u)
  void consume(Event& e);                          // make compute wait for an event (a copy)
  // Stages 1-2 with the optimizer offloaded: all-gathers the replica once the unit's shard is back.
  void refresh_replica(UnitId u);
  // What setup() works out about the offloaded units (by pipe) for setup_offload.
  struct Offloaded {
    std::vector<offload::SwapRegion> state, params, grads;  // their regions on disk, by what is there
    std::vector<std::string> names;                         // theirs, for the files' errors
    int64_t staging_bytes = 0;                              // each of the host accumulation's staging buffers (0: none)
  };
  void setup_offload(Offloaded offloaded);
  // offload.params or offload.grads: nvme: the cache over `regions` in `slots` (taken from the host pool).
  std::unique_ptr<offload::SwapCache> make_swap_cache(std::vector<offload::SwapRegion> regions,
                                                      std::vector<std::string> names, int count, MemCategory category,
                                                      Buffer& slots, const offload::SwapCache::Use& use);
  void warn_no_direct(const char* contents) const;  // a rank's warning: offload.nvme_path refused O_DIRECT
  TensorView grad_shard(const Unit& u, bool full_grads) const;
  kernels::OptimizerHyper hyper(int64_t step) const;  // the optimizer's settings for step `step` (1-based)
  // The optimizer kernels on this device's shards of the units whose optimizer runs here (every unit without
  // offload; see offload.ratio), the stage 1-2 replicas then all-gathered.
  void update_on_device(const kernels::OptimizerHyper& h, float grad_scale, bool full_grads);
  void finish_step(bool full_grads);  // reset per-step state (after an update or a skipped step)
  // While the first step records the order (and always with ZS_CHECK_COLLECTIVES=1): every rank confirms
  // it is about to run the same collective on the same unit, so a divergent program fails with both sides
  // named instead of hanging or mixing data.
  enum class Collective { gather = 1, reduce_grads = 2 };  // (values travel in the check's message)
  void check_agreement(Collective op, UnitId u);

  Config cfg_;
  std::unique_ptr<ProcessGroup> owned_pg_;
  Comm* comm_ = nullptr;  // the world: agreement checks, host messages, stage 0's all-reduce
  std::unique_ptr<Comm> shard_group_, replica_group_;  // hybrid sharding only
  Comm* shards_ = nullptr;                             // gathers and reduce-scatters: the world or shard_group_
  Device device_;
  DType compute_, reduce_;
  std::unique_ptr<Stream> compute_stream_, gather_stream_, reduce_stream_;
  offload::HostPool host_pool_;  // the offloaded state's memory; outlives the units' parts of it
  Buffer swap_buffers_;          // offload.optimizer: nvme: the state's host buffers (outlive offload_'s swap)
  Buffer param_swap_buffers_;    // offload.params: nvme: the parameters' host slots (likewise)
  std::vector<Buffer> accumulation_staging_;  // host accumulation: the micro-batches' staging buffers
  Buffer grad_swap_buffers_;                  // offload.grads: nvme: the gradients' host slots (likewise)
  std::vector<std::unique_ptr<Unit>> units_;
  std::unordered_map<std::string, std::string> full_names_;  // "unit.tensor" -> unit: add_unit's uniqueness check
  std::unique_ptr<offload::Pipeline> offload_;               // offload.optimizer: cpu (drained before the units go)
  bool early_update_ = false;   // offload: update each unit as its gradients land (no clipping, no scaling)
  bool early_started_ = false;  // ... and this step's update has started
  bool ready_ = false;

  struct PoolBuffer {
    Buffer buf;
    UnitId owner = -1;
    std::unique_ptr<Event> free_after;  // gather pool: compute finished with it
    Work last_reduce;                   // grad pool: the reduce-scatter that read it
    // Grad pool: the last work that reads it after the reduce-scatter: the copy of its shard to the host
    // (offload), or the add of its shard into the unit's (sharded accumulation); null when none.
    Event* read_after_reduce = nullptr;
  };
  std::vector<PoolBuffer> gather_pool_, grad_pool_;
  int grad_pool_next_ = 0;

  // Prefetch: the order of gathers recorded on the first step, and where this step has got to in it.
  std::vector<UnitId> order_;
  std::vector<int> update_order_;  // offload: each offloaded unit's pipe once, in the order of its first gather
  std::size_t order_pos_ = 0;
  bool recording_ = true;

  // Where the step is, for zsmem's timeline (marks are recorded only while the ledger traces).
  enum class Phase : uint8_t { idle, forward, backward, step };
  Phase phase_ = Phase::idle;
  void enter(Phase p);

  int64_t step_ = 0;
  bool scaling_ = false;  // precision.loss_scale: dynamic or fixed
  bool check_collectives_ = false;
  int64_t collectives_checked_ = 0;  // the fingerprint's sequence number
  double exposed_comm_s_ = 0;
  uint64_t last_load_bytes_ = 0;
  std::pair<int64_t, int64_t> declared_activations_{0, 0};  // device, host
  std::function<std::string()> user_state_;
  Buffer ckpt_staging_;                               // checkpoint.async: this rank's file, copied between steps
  std::unique_ptr<AsyncCheckpoint> async_ckpt_;       // and its writer (declared after the staging: goes first)
  void wait_timed(Work& w, const Unit* u = nullptr);  // host wait, counted as exposed communication
  LossScaler scaler_;
  Buffer norm_scratch_;  // per-unit sums of squares, then the global total (device memory)
  Buffer control_;       // all_gather_host's (kControlFloats per rank of the world): see control()
  std::vector<std::unique_ptr<Event>> grads_ready_;  // per unit: the app's gradient writes are done
  std::vector<std::unique_ptr<Event>> shard_ready_;  // offload, per unit: its shard reduced (and summed on the device)
  std::vector<std::unique_ptr<Event>> grads_added_;  // sharded accumulation, per unit: the micro-batch's add
  std::unique_ptr<Event> update_done_;               // the step's optimizer updates are done
  std::vector<float> norm_host_;                     // per-unit sums of squares, on the host
};

}  // namespace zs
