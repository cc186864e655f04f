// The engine's construction and set-up: device, groups and streams, the units, the fit check, every buffer
// from the memory plan, and the first values (init_params). The step's parts: engine_gather.cpp,
// engine_step.cpp; checkpoints and weight files: engine_checkpoint.cpp.
#include "runtime/engine.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "core/bootstrap.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "runtime/async_checkpoint.h"
#include "runtime/memory_plan.h"

namespace zs {
namespace {

Device pick_device(const std::string& want) {
  if (want == "cpu") return Device::cpu();
  if (want == "cuda") {
    ZS_CHECK(cuda_available(), "device: cuda was asked for but no CUDA GPU is visible (or this build has no CUDA)");
    return Device::cuda(0);
  }
  // auto: CUDA when every rank on this node can have a GPU of its own (NCCL refuses two ranks on one).
  const JobEnv env = job_env();
  const int gpus = cuda_device_count(), local = env.local_world_size;
  if (gpus > 0 && gpus < local && env.local_rank == 0)
    log::warn(
        "device: auto: {} ranks on this node but {} GPU{}: running on the CPU (start at most {} ranks per "
        "node to use CUDA)",
        local, gpus, gpus > 1 ? "s" : "", gpus);
  return gpus >= local && gpus > 0 ? Device::cuda(0) : Device::cpu();
}

}  // namespace

// ---- construction and set-up -----------------------------------------------------------------------

Engine::Engine(const Config& cfg) : cfg_(cfg) {
  ProcessGroupOptions o;
  o.timeout = Millis(static_cast<int64_t>(cfg.comm.timeout_s * 1000));
  device_ = pick_device(cfg.device);
  if (cfg.comm.backend == "gloo")
    o.backend = Backend::gloo;
  else if (cfg.comm.backend == "nccl")
    o.backend = Backend::nccl;
  else
    o.backend = device_.is_cuda() ? Backend::nccl : Backend::gloo;
  owned_pg_ = std::make_unique<ProcessGroup>(init_process_group(o));
  comm_ = owned_pg_->world.get();
  device_ = comm_->device();
  compute_ = cfg.precision.param;
  reduce_ = cfg.precision.reduce;
  check_hybrid();
  make_streams();
}

Engine::Engine(const Config& cfg, Comm& world)
    : cfg_(cfg), comm_(&world), device_(world.device()), compute_(cfg.precision.param), reduce_(cfg.precision.reduce) {
  check_hybrid();
  make_streams();
}

void Engine::check_hybrid() const {
  const int g = cfg_.zero.hybrid_group, n = comm_->size();
  if (g == 0) return;
  ZS_CHECK(cfg_.zero.stage >= 1,
           "zero.hybrid_group: {} shards within groups of {} ranks, but stage 0 shards nothing; use stage 1-3, or "
           "set hybrid_group: 0",
           g, g);
  ZS_CHECK(n % g == 0,
           "rank {}: zero.hybrid_group: {} does not divide the {} ranks into whole groups; use a divisor of {} "
           "(the ranks per node, typically)",
           comm_->rank(), g, n, n);
}

int Engine::shard_size() const {
  return cfg_.zero.shard_size(comm_->size());
}

int Engine::shard_rank() const {
  return cfg_.zero.shard_rank(comm_->size(), comm_->rank());
}

void Engine::make_groups() {
  if (shards_) return;
  const int g = shard_size(), r = comm_->rank();
  if (!cfg_.zero.replicated(comm_->size())) {
    shards_ = comm_;
    return;
  }
  // Consecutive ranks shard together (a node, typically); the ranks at the same place in each group hold
  // the same shards and average their reduced gradients.
  shard_group_ = comm_->split(r / g, r);
  replica_group_ = comm_->split(r % g, r);
  shards_ = shard_group_.get();
}

// From construction on, so an app can bind its kernels (a cuBLAS handle, say) to the compute stream
// before init_params.
void Engine::make_streams() {
  compute_stream_ = make_stream(device_);
  gather_stream_ = make_stream(device_);
  reduce_stream_ = make_stream(device_);
}

Engine::~Engine() {
  // Finish whatever is in flight before the buffers it uses go away; one failure must not skip the rest.
  auto quietly = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      log::shutdown_failure("engine shutdown after a failure", e);
    }
  };
  for (auto& u : units_) quietly([&] { u->pending.wait(); });
  for (auto& b : grad_pool_) quietly([&] { b.last_reduce.wait(); });
  for (Stream* s : {gather_stream_.get(), reduce_stream_.get(), compute_stream_.get()})
    if (s) quietly([&] { s->synchronize(); });
  // A copy of a gradient shard to the host may still read the gradient pool (an engine dropped mid-step).
  if (offload_) quietly([&] { offload_->drain(); });
  if (async_ckpt_) try {  // a checkpoint.async save still being written
      async_ckpt_->wait();
    } catch (const std::exception& e) {
      log::error("{}", e.what());
    }
  if (const char* dir = std::getenv("ZS_MEMORY_REPORT"); dir && ready_) quietly([&] { write_memory_report(dir); });
}

UnitId Engine::add_unit(std::string name, std::vector<TensorSpec> tensors) {
  ZS_CHECK(!ready_, "add_unit('{}'): units must be added before init_params", name);
  ZS_CHECK(!tensors.empty(), "add_unit('{}'): a unit needs at least one tensor", name);
  ZS_CHECK(std::any_of(tensors.begin(), tensors.end(), [](const TensorSpec& t) { return t.trainable; }),
           "add_unit('{}'): every tensor is frozen; a unit needs at least one trainable tensor (keep fully frozen "
           "layers outside the engine)",
           name);
  // Names identify tensors in checkpoints and exports ("unit.tensor"): each must be one tensor's.
  ZS_CHECK(!name.empty(), "add_unit: a unit needs a name (it prefixes its tensors' names in checkpoints)");
  ZS_CHECK(std::none_of(units_.begin(), units_.end(), [&](const auto& o) { return o->name == name; }),
           "add_unit('{}'): a unit of that name was added already; unit names must be unique", name);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::string& t = tensors[i].name;
    ZS_CHECK(!t.empty(), "add_unit('{}'): tensor {} has no name", name, i);
    for (std::size_t j = 0; j < i; ++j)
      ZS_CHECK(tensors[j].name != t, "add_unit('{}'): tensor '{}' is declared twice", name, t);
    const auto clash = full_names_.find(name + "." + t);
    ZS_CHECK(clash == full_names_.end(), "add_unit('{}'): tensor '{}' is named '{}.{}', like a tensor of unit '{}'",
             name, t, name, t, clash->second);
  }
  for (const TensorSpec& t : tensors) full_names_.emplace(name + "." + t.name, name);
  auto u = std::make_unique<Unit>();
  u->name = std::move(name);
  u->tensors = std::move(tensors);
  units_.push_back(std::move(u));
  return static_cast<UnitId>(units_.size() - 1);
}

void Engine::plan_layouts() {
  if (!units_.front()->slot_of.empty()) return;
  const int world = cfg_.zero.stage == 0 ? 1 : shard_size();
  for (auto& up : units_) {
    UnitLayouts l = make_unit_layouts(up->tensors, world);
    up->layout = std::move(l.layout);
    up->frozen = std::move(l.frozen);
    up->slot_of = std::move(l.slot_of);
  }
}

MemoryPlan Engine::memory_plan() const {
  std::vector<std::vector<TensorSpec>> specs;
  for (const auto& u : units_) specs.push_back(u->tensors);
  return plan_memory(specs, cfg_, comm_->size(), comm_->rank(), device_.is_cpu());
}

void Engine::check_fits(const MemoryPlan& plan) const {
  // Before any allocation: a run that cannot fit fails now, with zsmem's numbers, not mid-step.
  const int64_t sharing = std::max(1, job_env().local_world_size);  // ranks sharing this host's RAM
  const double gib = 1073741824.0;
  auto parts = [&](const CategoryBytes& b) {
    std::string out;
    for (int c = 0; c < kMemCategoryCount; ++c)
      if (b[static_cast<std::size_t>(c)] > 0)
        out += fmt::format("{}{} {:.2f} GiB", out.empty() ? "" : ", ", mem_category_name(static_cast<MemCategory>(c)),
                           static_cast<double>(b[static_cast<std::size_t>(c)]) / gib);
    return out;
  };
  const int64_t host_free = available_memory(Device::cpu()) / sharing;
  // A CPU device is the host's memory too: both plans come out of the same RAM.
  const int64_t device_need = plan.device_total() + (device_.is_cpu() ? plan.host_total() : 0);
  const int64_t device_free = device_.is_cpu() ? host_free : available_memory(device_);
  const char* shared = " (the host's free memory shared by {} local ranks)";
  if (device_need > device_free)
    ZS_FAIL(
        "rank {}: the model does not fit: ZeRO-{} needs {:.2f} GiB per rank on {} ({}) but {:.2f} GiB is "
        "available{}; use a higher zero.stage, more ranks, bf16 compute, offload, or a smaller model (zsmem estimate "
        "shows the options)",
        comm_->rank(), cfg_.zero.stage, static_cast<double>(device_need) / gib, device_.str(), parts(plan.device),
        static_cast<double>(device_free) / gib,
        device_.is_cpu() && sharing > 1 ? fmt::format(fmt::runtime(shared), sharing) : "");
  if (!device_.is_cpu() && plan.host_total() > host_free)
    ZS_FAIL(
        "rank {}: the engine's host memory does not fit: it needs {:.2f} GiB per rank ({}) but {:.2f} GiB "
        "is available{}; offload less (offload.params: none) or put it on disk (offload.optimizer: nvme, "
        "offload.params: nvme), {}use more ranks or nodes, or a smaller model",
        comm_->rank(), static_cast<double>(plan.host_total()) / gib, parts(plan.host),
        static_cast<double>(host_free) / gib, sharing > 1 ? fmt::format(fmt::runtime(shared), sharing) : "",
        plan.host[static_cast<std::size_t>(MemCategory::checkpoint_staging)] > 0 ? "save synchronously "
                                                                                   "(checkpoint.async: false), "
                                                                                 : "");
}

void Engine::setup() {
  ZS_CHECK(!units_.empty(), "init_params: no units were added");
  if (std::getenv("ZS_MEMORY_REPORT")) {  // zsmem measure: the timeline starts with the allocations
    MemoryLedger::global().start_trace();
    MemoryLedger::global().mark("init");
  }
  if (const std::string bad = offload_problem(cfg_); !bad.empty()) ZS_FAIL("{}", bad);
  make_groups();
  scaling_ = cfg_.precision.scaled();
  scaler_ = LossScaler{};
  scaler_.fixed = cfg_.precision.loss_scale == "fixed";
  scaler_.scale = scaler_.fixed ? cfg_.precision.fixed_loss_scale : std::ldexp(1.0, cfg_.precision.initial_scale_power);
  scaler_.window = cfg_.precision.loss_scale_window;
  scaler_.hysteresis = cfg_.precision.hysteresis;
  scaler_.min_scale = cfg_.precision.min_loss_scale;
  const char* check = std::getenv("ZS_CHECK_COLLECTIVES");
  check_collectives_ = cfg_.debug.check_collectives || (check && std::string_view(check) == "1");
  const int stage = cfg_.zero.stage, r = shard_rank();
  const MemoryKind mk = MemoryKind::device;
  int64_t largest = 0, largest_grads = 0;  // elements of the biggest unit: all params / trainable ones
  plan_layouts();
  const MemoryPlan plan = memory_plan();
  check_fits(plan);
  // Sizes from the memory plan (runtime/memory_plan.h), which zsmem predicts with.
  std::vector<int64_t> trainable;
  for (const auto& up : units_) trainable.push_back(up->layout.elements());
  const std::vector<bool> offloaded = offloaded_units(trainable, cfg_);
  std::vector<UnitBuffers> plans;
  Offloaded off;
  int64_t largest_offloaded = 0;  // elements of the largest offloaded unit's shard
  int64_t pool = 0;
  int pipes = 0;
  for (std::size_t i = 0; i < units_.size(); ++i) {
    const UnitBuffers& b = plans.emplace_back(unit_buffers(units_[i]->layout, units_[i]->frozen, cfg_, offloaded[i]));
    pool += b.host_pool_bytes();
    if (b.state_on_disk) off.state.push_back(b.swap_region());
    if (b.params_on_disk) off.params.push_back(b.param_region());
    if (b.grads_on_disk) off.grads.push_back(b.grad_region());
    units_[i]->pipe = offloaded[i] ? pipes++ : -1;
    if (!offloaded[i]) continue;
    off.names.push_back(units_[i]->name);
    largest_offloaded = std::max(largest_offloaded, units_[i]->layout.shard);
  }
  off.staging_bytes = accumulation_staging_bytes(largest_offloaded, cfg_);
  pool += offload::kAccumulationStaging * offload::pool_part_bytes(off.staging_bytes);
  for (const auto& [regions, count] :
       {std::pair{&off.state, cfg_.offload.buffer_count}, std::pair{&off.params, cfg_.offload.param_buffer_count},
        std::pair{&off.grads, cfg_.offload.grad_buffer_count}})
    pool += offload::pool_part_bytes(offload::swap_buffer_bytes(*regions, count));
  if (pool > 0) host_pool_ = offload::HostPool(pool, cfg_.offload.pin_memory, device_);  // every offloaded part
  for (std::size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    largest = std::max(largest, u.layout.padded + u.frozen.padded);
    largest_grads = std::max(largest_grads, u.layout.padded);
    const UnitBuffers& b = plans[i];
    auto alloc = [&](int64_t bytes, MemCategory c) {
      return bytes > 0 ? Buffer(static_cast<std::size_t>(bytes), mk, device_, c) : Buffer();
    };
    auto host = [&](int64_t bytes, MemCategory c) { return host_pool_.take(bytes, c); };
    auto state = [&](int64_t bytes, MemCategory c) { return b.offload ? host(bytes, c) : alloc(bytes, c); };
    u.full_params = alloc(b.full_params, MemCategory::params);
    u.frozen_shard =
        b.params_on_host ? host(b.frozen_shard, MemCategory::params) : alloc(b.frozen_shard, MemCategory::params);
    if (!b.state_on_disk) {
      u.master = state(b.master, b.master_category);
      u.m = state(b.m, MemCategory::optim_state);
      u.v = state(b.v, MemCategory::optim_state);
    }
    u.grads = alloc(b.grads, MemCategory::grads);
    u.param_shard = alloc(b.param_shard, MemCategory::params);
    if (!b.grads_on_disk) u.host_grads = host(b.host_grads, MemCategory::grads);
    if (!b.params_on_disk) u.host_params = host(b.host_params, b.host_params_category);
    std::vector<bool> decays;
    for (const auto& t : u.tensors)
      if (t.trainable) decays.push_back(t.weight_decay);
    auto ranges = u.layout.shard_ranges(stage == 0 ? 0 : r, decays);
    u.num_decay_ranges = static_cast<int64_t>(ranges.size());
    u.decay_ranges = Buffer(std::max<std::size_t>(1, ranges.size()) * sizeof(kernels::ElementRange),
                            b.offload ? MemoryKind::host : mk, device_, MemCategory::other);
    memory_copy(u.decay_ranges.data(), u.decay_ranges.resident(), ranges.data(), Device::cpu(),
                ranges.size() * sizeof(kernels::ElementRange));
  }
  if (cfg_.offload.optimizer_on_cpu()) setup_offload(std::move(off));
  const PoolPlan pools = pool_plan(largest, largest_grads, num_units(), cfg_);
  for (int i = 0; i < pools.gather_count; ++i)
    gather_pool_.push_back(
        {Buffer(static_cast<std::size_t>(pools.gather_bytes), mk, device_, MemCategory::gather_buffers),
         -1,
         make_event(device_),
         {}});
  for (int i = 0; i < pools.grad_count; ++i)
    grad_pool_.push_back(
        {Buffer(static_cast<std::size_t>(pools.grad_bytes), mk, device_, MemCategory::grads), -1, nullptr, {}});
  norm_scratch_ = Buffer((units_.size() + 1) * sizeof(float), mk, device_, MemCategory::other);
  control();  // now, not in the first step's agreement checks
  check_checkpoint_dir();
  if (cfg_.checkpoint.async) {
    async_ckpt_ = std::make_unique<AsyncCheckpoint>(comm_->store(), comm_->name(), comm_->timeout());
    const int64_t staging = plan.host[static_cast<std::size_t>(MemCategory::checkpoint_staging)];
    if (staging > 0)
      ckpt_staging_ = Buffer(static_cast<std::size_t>(staging),
                             device_.is_cuda() && cfg_.offload.pin_memory ? MemoryKind::pinned : MemoryKind::host,
                             device_, MemCategory::checkpoint_staging);
  }
  for (std::size_t i = 0; i < units_.size(); ++i) grads_ready_.push_back(make_event(device_));
  if (cfg_.offload.optimizer_on_cpu())
    for (std::size_t i = 0; i < units_.size(); ++i) shard_ready_.push_back(make_event(device_));
  if (cfg_.zero.sharded_accumulation())
    for (std::size_t i = 0; i < units_.size(); ++i) grads_added_.push_back(make_event(device_));
  update_done_ = make_event(device_);
  norm_host_.resize(units_.size());
  ready_ = true;
}

void Engine::warn_no_direct(const char* contents) const {
  log::warn(
      "offload: the filesystem of offload.nvme_path '{}' refused O_DIRECT: the file of the {} goes through the page "
      "cache, which holds its data in host memory again while memory lasts; use a directory on a local disk (ext4, "
      "xfs)",
      cfg_.offload.nvme_path, contents);
}

std::unique_ptr<offload::SwapCache> Engine::make_swap_cache(std::vector<offload::SwapRegion> regions,
                                                            std::vector<std::string> names, int count,
                                                            MemCategory category, Buffer& slots,
                                                            const offload::SwapCache::Use& use) {
  slots = host_pool_.take(offload::swap_buffer_bytes(regions, count), category);
  auto cache = std::make_unique<offload::SwapCache>(cfg_.offload.nvme_path, comm_->rank(), std::move(regions),
                                                    slots.data(), count, device_, use, std::move(names));
  if (comm_->rank() == 0)
    log::info("offload: the {} are on disk, {:.2f} GiB for rank 0 in {}, cached in {} host slots of {:.1f} MiB",
              use.file.contents, static_cast<double>(cache->file_bytes()) / 1073741824.0, cfg_.offload.nvme_path, count,
              static_cast<double>(slots.bytes() - offload::kSwapAlignment) / count / 1048576.0);
  if (!cache->direct()) warn_no_direct(use.file.contents);
  return cache;
}

void Engine::setup_offload(Offloaded off) {
  const int r = shard_rank();
  const auto cs = static_cast<int64_t>(dtype_size(compute_)), rs = static_cast<int64_t>(dtype_size(reduce_));
  std::vector<offload::UnitShard> shards;
  int64_t on_host = 0, all = 0;
  for (auto& up : units_) {
    Unit& u = *up;
    all += u.layout.elements();
    if (u.pipe < 0) continue;  // offload.ratio < 1: this unit's optimizer stays on the device
    on_host += u.layout.elements();
    offload::UnitShard s;
    s.n = u.layout.shard;
    s.master = static_cast<float*>(u.master.data());
    s.m = u.m.data();
    s.v = u.v.data();
    s.grads[0] = u.host_grads.data();
    if (cfg_.offload.delayed()) s.grads[1] = static_cast<char*>(u.host_grads.data()) + s.n * rs;
    s.host_params = u.host_params.data();
    // The updated shard goes to its slot of the replica (stages 1-2) or to the device shard the stage-3
    // all-gather starts from; with offload.params it stays on the host (or the disk) and the gather
    // uploads it.
    if (u.full_params.data())
      s.device_params = static_cast<char*>(u.full_params.data()) + s.n * r * cs;
    else
      s.device_params = u.param_shard.data();
    s.decay = static_cast<const kernels::ElementRange*>(u.decay_ranges.data());
    s.num_decay = u.num_decay_ranges;
    shards.push_back(s);
  }
  const auto on_host_units = shards.size();
  std::unique_ptr<offload::StateSwap> swap;
  if (cfg_.offload.state_on_nvme()) {
    const int count = cfg_.offload.buffer_count;
    swap_buffers_ = host_pool_.take(offload::swap_buffer_bytes(off.state, count), MemCategory::optim_state);
    swap = std::make_unique<offload::StateSwap>(cfg_.offload.nvme_path, comm_->rank(), std::move(off.state),
                                                swap_buffers_.data(), count, off.names);
    if (comm_->rank() == 0)
      log::info(
          "offload: the optimizer state is on disk, {:.2f} GiB for rank 0 in {}, streamed through {} host "
          "buffers of {:.1f} MiB",
          static_cast<double>(swap->file_bytes()) / 1073741824.0, cfg_.offload.nvme_path, count,
          static_cast<double>(swap_buffers_.bytes() - offload::kSwapAlignment) / count / 1048576.0);
    if (!swap->direct()) warn_no_direct("optimizer state");
  }
  std::unique_ptr<offload::SwapCache> params, grads;
  if (cfg_.offload.params_on_nvme())
    params = make_swap_cache(std::move(off.params), off.names, cfg_.offload.param_buffer_count, MemCategory::params,
                             param_swap_buffers_, offload::SwapCache::kParams);
  if (cfg_.offload.grads_on_nvme())
    grads = make_swap_cache(std::move(off.grads), off.names, cfg_.offload.grad_buffer_count, MemCategory::grads,
                            grad_swap_buffers_, offload::SwapCache::kGrads);
  std::vector<void*> staging;  // with host accumulation
  if (off.staging_bytes > 0)
    for (int k = 0; k < offload::kAccumulationStaging; ++k)
      staging.push_back(
          accumulation_staging_.emplace_back(host_pool_.take(off.staging_bytes, MemCategory::offload_staging)).data());
  offload_ = std::make_unique<offload::Pipeline>(device_, compute_, reduce_, cfg_.optimizer.state_dtype,
                                                 cfg_.offload.delayed(), std::move(shards), std::move(swap),
                                                 std::move(params), std::move(grads), std::move(staging));
  if (cfg_.offload.ratio < 1.0 && comm_->rank() == 0)
    log::info(
        "offload: the optimizer of the last {} of {} units ({:.1f} % of the parameters, offload.ratio {}) runs "
        "on the host, the others' on the device",
        on_host_units, units_.size(), all > 0 ? 100.0 * static_cast<double>(on_host) / static_cast<double>(all) : 0.0,
        cfg_.offload.ratio);
  if (device_.is_cuda()) {
    const int local = job_env().local_world_size;
    kernels::set_default_cpu_threads(
        offload::default_cpu_threads(static_cast<int>(std::thread::hardware_concurrency()), local));
    if (comm_->rank() == 0)
      log::info("offload: the CPU step runs on {} threads per rank ({} ranks on this node; ZS_CPU_THREADS chooses)",
                kernels::cpu_threads(), local);
  }
  // Without clipping or loss scaling (dynamic or fixed: an overflow skips the step) the update does not
  // depend on the global norm, so each unit's can start as soon as its gradients are on the host, behind the
  // rest of the backward (same math, same bits). (Not with the state on disk: its reads follow the order the
  // update takes the units in.)
  early_update_ =
      !cfg_.offload.delayed() && cfg_.optimizer.clip_grad_norm <= 0 && !scaling_ && !cfg_.offload.state_on_nvme();
}

void Engine::init_params(const init::Initializer& init) {
  init_params([&](std::string_view) { return init; });
}

void Engine::init_params(const InitRule& rule) {
  ZS_CHECK(!ready_, "init_params: the parameters were already initialised or loaded");
  setup();
  // Values are a pure function of (seed, "unit.tensor", index): the same at every world size.
  install([&](const Unit& u, int t, int64_t first, int64_t count, float* out) {
    const std::string key = u.full_name(t);
    rule(key).fill(key, static_cast<uint64_t>(first), count, out);
  });
}

void Engine::install(const ValueSource& source, const StateSource& states) {
  const int stage = cfg_.zero.stage, r = shard_rank();
  for (auto& up : units_) {
    Unit& u = *up;
    // This rank's shard of one layout, in f32 on the host: the parts of its tensors that fall inside,
    // from fill(tensor, first element, count, out).
    auto shard_values = [&](const FlatLayout& l, bool frozen, const auto& fill) {
      std::vector<float> out(static_cast<std::size_t>(l.shard), 0.0f);
      const int64_t lo = l.shard_offset(stage == 0 ? 0 : r), hi = lo + l.shard;
      for (int t = 0; t < static_cast<int>(u.tensors.size()); ++t) {
        if (u.is_frozen(t) != frozen) continue;
        const auto& slot = l.slots[static_cast<std::size_t>(u.slot_of[static_cast<std::size_t>(t)])];
        const int64_t b = std::max(lo, slot.offset), e = std::min(hi, slot.offset + slot.numel);
        if (b < e) fill(t, b - slot.offset, e - b, out.data() + (b - lo));
      }
      return out;
    };
    auto values = [&](int t, int64_t first, int64_t count, float* out) { source(u, t, first, count, out); };
    // f32 values stored at dst in `to` (the compute dtype, or the optimizer states' dtype).
    auto put = [&](void* dst, Device where, const std::vector<float>& v, DType to) {
      const auto n = static_cast<int64_t>(v.size());
      if (to == DType::f32) return memory_copy(dst, where, v.data(), Device::cpu(), v.size() * 4);
      std::vector<uint8_t> narrow(v.size() * dtype_size(to));
      kernels::cast(Device::cpu(), TensorView::flat(const_cast<float*>(v.data()), DType::f32, n),
                    TensorView::flat(narrow.data(), to, n));
      memory_copy(dst, where, narrow.data(), Device::cpu(), narrow.size());
    };
    auto upload = [&](void* dst, Device where, const std::vector<float>& v) { put(dst, where, v, compute_); };
    const int64_t P = u.layout.padded, S = u.layout.shard, PF = u.frozen.padded, SF = u.frozen.shard;
    const int64_t lo = stage == 0 ? 0 : S * r, lof = stage == 0 ? 0 : SF * r;
    const std::vector<float> train = shard_values(u.layout, false, values);
    const std::vector<float> frozen = PF > 0 ? shard_values(u.frozen, true, values) : std::vector<float>{};
    // Where the master, m and v go: their buffers, or the unit's region of the state file (offload.optimizer:
    // nvme), read into a host buffer here and written back below.
    struct StatePart {
      void* data;
      Device where;
      std::size_t bytes;
    };
    offload::StateSwap* swap = u.pipe >= 0 ? offload_->swap() : nullptr;
    std::array<StatePart, 3> state{};
    if (swap) {
      const offload::StateSwap::Parts parts = swap->get(u.pipe);
      for (std::size_t k = 0; k < 3; ++k)
        state[k] = {parts[k], Device::cpu(), static_cast<std::size_t>(swap->region(u.pipe).bytes[k])};
    } else {
      std::size_t k = 0;
      for (const Buffer* b : {&u.master, &u.m, &u.v}) state[k++] = {b->data(), b->resident(), b->bytes()};
    }
    if (state[0].data) memory_copy(state[0].data, state[0].where, train.data(), Device::cpu(), train.size() * 4);
    for (const Buffer* b : {&u.param_shard, &u.host_params})  // the offloaded step's compute-dtype copies
      if (b->data()) upload(b->data(), b->resident(), train);
    if (offload::SwapCache* disk = u.pipe >= 0 ? offload_->param_swap() : nullptr) {  // or on disk
      upload(disk->begin_write(u.pipe), Device::cpu(), train);
      disk->finish(u.pipe);
    }
    if (stage == 3) {
      if (PF > 0) upload(u.frozen_shard.data(), u.frozen_shard.resident(), frozen);
    } else {
      // The replica: this rank's slots now, the others' by all-gather (stage 0 holds everything already).
      char* full = static_cast<char*>(u.full_params.data());
      upload(full + lo * static_cast<int64_t>(dtype_size(compute_)), device_, train);
      if (PF > 0) upload(full + (P + lof) * static_cast<int64_t>(dtype_size(compute_)), device_, frozen);
      if (stage > 0) {
        TensorView all = u.full_params.view(compute_, P + PF);
        shards_->all_gather(all.slice(lo, S), all.slice(0, P)).wait();
        if (PF > 0) shards_->all_gather(all.slice(P + lof, SF), all.slice(P, PF)).wait();
      }
      u.param_state = ParamState::sharded;  // the replica is whole
    }
    for (int which = 1; which <= 2; ++which) {
      const StatePart& b = state[static_cast<std::size_t>(which)];
      if (!b.data) continue;
      if (!states) {
        memory_zero(b.data, b.where, b.bytes);
        continue;
      }
      const auto v = shard_values(u.layout, false, [&](int t, int64_t first, int64_t count, float* out) {
        states(u, t, which, first, count, out);
      });
      put(b.data, b.where, v, cfg_.optimizer.state_dtype);
    }
    if (swap) swap->put(u.pipe);
    memory_zero(u.grads.data(), device_, u.grads.bytes());
    memory_zero(u.host_grads.data(), Device::cpu(), u.host_grads.bytes());
  }
  if (offload_) offload_->discard_pending();  // the parameters were just replaced
  for (auto& b : grad_pool_) memory_zero(b.buf.data(), device_, b.buf.bytes());
}

MemoryReport Engine::memory() const {
  const MemoryLedger& l = MemoryLedger::global();
  MemoryReport m;
  m.device = device_;
  for (int c = 0; c < kMemCategoryCount; ++c) {
    m.on_device[static_cast<std::size_t>(c)] = l.stats(device_, static_cast<MemCategory>(c));
    m.on_host[static_cast<std::size_t>(c)] = l.stats(MemPlace::host_memory(), static_cast<MemCategory>(c));
  }
  m.device_total = l.total(device_);
  m.host_total = l.total(MemPlace::host_memory());
  return m;
}

}  // namespace zs
