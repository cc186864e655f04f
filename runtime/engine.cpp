// The engine: stages 0-3 over flat unit shards, just-in-time gathers with prefetch from a fixed pool,
// reduce-scatter (or all-reduce) of gradients, global-norm clipping and the shard update.
#include "runtime/engine.h"

#include <fmt/ranges.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>

#include "core/bootstrap.h"
#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"
#include "runtime/memory_plan.h"
#include "runtime/safetensors.h"

namespace zs {
namespace {

std::size_t es(DType t) {
  return dtype_size(t);
}

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
  return TensorView{base + u.param_offset(index) * static_cast<int64_t>(es(engine_->compute_)), engine_->compute_,
                    u.tensors[static_cast<std::size_t>(index)].shape, engine_->device_};
}

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
      log::warn("engine shutdown after a failed collective: {}", e.what());
    }
  };
  for (auto& u : units_) quietly([&] { u->pending.wait(); });
  for (auto& b : grad_pool_) quietly([&] { b.last_reduce.wait(); });
  for (Stream* s : {gather_stream_.get(), reduce_stream_.get(), compute_stream_.get()})
    if (s) quietly([&] { s->synchronize(); });
  // A copy of a gradient shard to the host may still read the gradient pool (an engine dropped mid-step).
  if (offload_) quietly([&] { offload_->drain(); });
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

void Engine::check_fits() const {
  // Before any allocation: a run that cannot fit fails now, with zsmem's numbers, not mid-step.
  const MemoryPlan plan = memory_plan();
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
        "rank {}: the offloaded state does not fit in host memory: it needs {:.2f} GiB per rank ({}) but {:.2f} GiB "
        "is available{}; offload less (offload.params: none), use more ranks or nodes, or a smaller model",
        comm_->rank(), static_cast<double>(plan.host_total()) / gib, parts(plan.host),
        static_cast<double>(host_free) / gib, sharing > 1 ? fmt::format(fmt::runtime(shared), sharing) : "");
}

void Engine::setup() {
  ZS_CHECK(!units_.empty(), "init_params: no units were added");
  if (std::getenv("ZS_MEMORY_REPORT")) {  // zsmem measure: the timeline starts with the allocations
    MemoryLedger::global().start_trace();
    MemoryLedger::global().mark("init");
  }
  if (const std::string bad = offload_problem(cfg_); !bad.empty()) ZS_FAIL("{}", bad);
  make_groups();
  dynamic_scaling_ = cfg_.precision.loss_scale == "dynamic";
  const char* check = std::getenv("ZS_CHECK_COLLECTIVES");
  check_collectives_ = cfg_.debug.check_collectives || (check && std::string_view(check) == "1");
  const int stage = cfg_.zero.stage, r = shard_rank();
  const MemoryKind mk = MemoryKind::device;
  int64_t largest = 0, largest_grads = 0;  // elements of the biggest unit: all params / trainable ones
  plan_layouts();
  check_fits();
  // Sizes from the memory plan (runtime/memory_plan.h), which zsmem predicts with.
  std::vector<int64_t> trainable;
  for (const auto& up : units_) trainable.push_back(up->layout.elements());
  const std::vector<bool> offloaded = offloaded_units(trainable, cfg_);
  std::vector<UnitBuffers> plans;
  int64_t pool = 0;
  int pipes = 0;
  for (std::size_t i = 0; i < units_.size(); ++i) {
    plans.push_back(unit_buffers(units_[i]->layout, units_[i]->frozen, cfg_, offloaded[i]));
    pool += plans.back().host_pool_bytes();
    units_[i]->pipe = offloaded[i] ? pipes++ : -1;
  }
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
    u.master = state(b.master, b.master_category);
    u.m = state(b.m, MemCategory::optim_state);
    u.v = state(b.v, MemCategory::optim_state);
    u.grads = alloc(b.grads, MemCategory::grads);
    u.param_shard = alloc(b.param_shard, MemCategory::params);
    u.host_grads = host(b.host_grads, MemCategory::grads);
    u.host_params = host(b.host_params, b.host_params_category);
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
  if (cfg_.offload.optimizer_on_cpu()) setup_offload();
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
  for (std::size_t i = 0; i < units_.size(); ++i) grads_ready_.push_back(make_event(device_));
  if (cfg_.offload.optimizer_on_cpu())
    for (std::size_t i = 0; i < units_.size(); ++i) shard_summed_.push_back(make_event(device_));
  update_done_ = make_event(device_);
  norm_host_.resize(units_.size());
  ready_ = true;
}

void Engine::setup_offload() {
  const int r = shard_rank();
  const auto cs = static_cast<int64_t>(es(compute_)), rs = static_cast<int64_t>(es(reduce_));
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
    // all-gather starts from; with offload.params it stays on the host and the gather uploads it.
    if (u.full_params.data())
      s.device_params = static_cast<char*>(u.full_params.data()) + s.n * r * cs;
    else
      s.device_params = u.param_shard.data();
    s.decay = static_cast<const kernels::ElementRange*>(u.decay_ranges.data());
    s.num_decay = u.num_decay_ranges;
    shards.push_back(s);
  }
  const auto on_host_units = shards.size();
  offload_ = std::make_unique<offload::Pipeline>(device_, compute_, reduce_, cfg_.optimizer.state_dtype,
                                                 cfg_.offload.delayed(), std::move(shards));
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
  // Without clipping or loss scaling the update does not depend on the global norm, so each unit's can
  // start as soon as its gradients are on the host, behind the rest of the backward (same math, same bits).
  early_update_ = !cfg_.offload.delayed() && cfg_.optimizer.clip_grad_norm <= 0 && !dynamic_scaling_;
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
      std::vector<uint8_t> narrow(v.size() * es(to));
      kernels::cast(Device::cpu(), TensorView::flat(const_cast<float*>(v.data()), DType::f32, n),
                    TensorView::flat(narrow.data(), to, n));
      memory_copy(dst, where, narrow.data(), Device::cpu(), narrow.size());
    };
    auto upload = [&](void* dst, Device where, const std::vector<float>& v) { put(dst, where, v, compute_); };
    const int64_t P = u.layout.padded, S = u.layout.shard, PF = u.frozen.padded, SF = u.frozen.shard;
    const int64_t lo = stage == 0 ? 0 : S * r, lof = stage == 0 ? 0 : SF * r;
    const std::vector<float> train = shard_values(u.layout, false, values);
    const std::vector<float> frozen = PF > 0 ? shard_values(u.frozen, true, values) : std::vector<float>{};
    if (u.master.data())
      memory_copy(u.master.data(), u.master.resident(), train.data(), Device::cpu(), train.size() * 4);
    for (const Buffer* b : {&u.param_shard, &u.host_params})  // the offloaded step's compute-dtype copies
      if (b->data()) upload(b->data(), b->resident(), train);
    if (stage == 3) {
      if (PF > 0) upload(u.frozen_shard.data(), u.frozen_shard.resident(), frozen);
    } else {
      // The replica: this rank's slots now, the others' by all-gather (stage 0 holds everything already).
      char* full = static_cast<char*>(u.full_params.data());
      upload(full + lo * static_cast<int64_t>(es(compute_)), device_, train);
      if (PF > 0) upload(full + (P + lof) * static_cast<int64_t>(es(compute_)), device_, frozen);
      if (stage > 0) {
        TensorView all = u.full_params.view(compute_, P + PF);
        shards_->all_gather(all.slice(lo, S), all.slice(0, P)).wait();
        if (PF > 0) shards_->all_gather(all.slice(P + lof, SF), all.slice(P, PF)).wait();
      }
      u.param_state = ParamState::sharded;  // the replica is whole
    }
    int which = 0;
    for (Buffer* b : {&u.m, &u.v}) {
      ++which;
      if (!b->data()) continue;
      if (!states) {
        memory_zero(b->data(), b->resident(), b->bytes());
        continue;
      }
      const auto v = shard_values(u.layout, false, [&](int t, int64_t first, int64_t count, float* out) {
        states(u, t, which, first, count, out);
      });
      put(b->data(), b->resident(), v, cfg_.optimizer.state_dtype);
    }
    memory_zero(u.grads.data(), device_, u.grads.bytes());
    memory_zero(u.host_grads.data(), Device::cpu(), u.host_grads.bytes());
  }
  if (offload_) offload_->discard_pending();  // the parameters were just replaced
  for (auto& b : grad_pool_) memory_zero(b.buf.data(), device_, b.buf.bytes());
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

void Engine::issue_gather(UnitId id) {
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
    gather_part(u.param_shard.data() ? u.param_shard.data() : offload_->host_param_source(u.pipe), compute_, 0, P, S);
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
    issue_gather(order_[i]);
  }
}

namespace {
constexpr int kOpGather = 1, kOpReduce = 2;
const char* op_name(int op) {
  return op == kOpGather ? "gather" : "reduce_grads";
}
}  // namespace

void Engine::check_agreement(int op, UnitId id) {
  if (!(recording_ || check_collectives_) || comm_->size() == 1) return;
  const int n = comm_->size();
  const Unit& u = *units_[static_cast<std::size_t>(id)];
  const int64_t bytes = op == kOpGather ? (u.layout.padded + u.frozen.padded) * static_cast<int64_t>(es(compute_))
                                        : u.layout.padded * static_cast<int64_t>(es(reduce_));
  const int64_t seq = collectives_checked_++;
  constexpr int64_t k24 = int64_t{1} << 24;  // exact integers travel as f32 in 24-bit pieces
  auto fingerprint = [&](const float* f) {
    return fmt::format("{} #{} of unit '{}' ({} bytes)", op_name(static_cast<int>(f[0])), static_cast<int64_t>(f[2]),
                       f[1] >= 0 && f[1] < num_units() ? units_[static_cast<std::size_t>(f[1])]->name : "?",
                       static_cast<int64_t>(f[3]) * k24 + static_cast<int64_t>(f[4]));
  };
  const std::vector<float> mine{static_cast<float>(op), static_cast<float>(id), static_cast<float>(seq % k24),
                                static_cast<float>(bytes / k24), static_cast<float>(bytes % k24)};
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
  if (cfg_.zero.stage == 3 || offload_) check_agreement(kOpGather, id);
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
  if (cfg_.zero.stage == 3 && u.param_state == ParamState::sharded) issue_gather(id);
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

// ---- gradients -------------------------------------------------------------------------------------

int Engine::acquire_grad_buffer(UnitId id) {
  // Round robin over the buffers whose unit is done writing (its reduce-scatter may still be reading: wait
  // for it); a unit that keeps accumulating (a tied weight used twice in a step) keeps its buffer.
  const int n = static_cast<int>(grad_pool_.size());
  for (int k = 0; k < n; ++k) {
    const int b = (grad_pool_next_ + k) % n;
    PoolBuffer& pb = grad_pool_[static_cast<std::size_t>(b)];
    if (pb.owner >= 0) {
      Unit& prev = *units_[static_cast<std::size_t>(pb.owner)];
      if (prev.grad_state != GradState::reducing && prev.grad_state != GradState::reduced) continue;
      consume(pb.last_reduce, &prev);
      if (pb.copied) consume(*std::exchange(pb.copied, nullptr));  // offload: its shard went to the host
      prev.grad_buffer = -1;
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
  return TensorView{static_cast<char*>(grad_base(u)) + u.param_offset(index) * static_cast<int64_t>(es(reduce_)),
                    reduce_, u.tensors[static_cast<std::size_t>(index)].shape, device_};
}

void Engine::reduce_grads(UnitId id) {
  Unit& u = *units_.at(static_cast<std::size_t>(id));
  ZS_CHECK(u.grad_state == GradState::accumulating, "rank {}: reduce_grads('{}') without grads() in this micro-batch",
           comm_->rank(), u.name);
  if (phase_ != Phase::backward) enter(Phase::backward);
  if (++u.micro_batches < cfg_.zero.grad_accumulation) return;  // reduce on the last micro-batch only
  check_agreement(kOpReduce, id);
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
  if (u.pipe >= 0) {
    // In place, wherever the full gradients are, then this rank's shard to the host for the CPU step.
    TensorView shard = full.slice(S * r, S);
    if (early_update_ && !early_started_) {  // this step's first shard: the CPU updates each as it lands
      offload_->update_early(hyper(step_ + 1), static_cast<float>(1.0 / cfg_.zero.grad_accumulation));
      early_started_ = true;
    }
    u.pending = reduce_scatter(full, shard);
    // The norm from the device's copy, as without offload: the host, whose memory traffic bounds the
    // offloaded step, then reads the gradients once (in the update). Summed behind the reduce on its
    // stream; the copy to the host, and so the buffer's reuse, waits for the sum.
    float* out = static_cast<float*>(norm_scratch_.data()) + id;
    const Device dev = device_;
    const DType t = reduce_;
    rs->submit([dev, data = shard.data, t, S, out, rs] {
      kernels::sum_squares(dev, TensorView::flat(data, t, S, dev), out, rs);
    });
    Event& summed = *shard_summed_[static_cast<std::size_t>(id)];
    rs->record(summed);
    Event& copied = offload_->download(u.pipe, shard.data, &summed);
    if (u.grad_buffer >= 0) {
      PoolBuffer& pb = grad_pool_[static_cast<std::size_t>(u.grad_buffer)];
      pb.last_reduce = u.pending;
      pb.copied = &copied;
    }
  } else if (stage == 0) {
    u.pending = comm_->all_reduce(full, full, ReduceOp::avg, rs);
  } else if (u.grad_buffer < 0) {
    u.pending = reduce_scatter(full, full.slice(S * r, S));  // in place
  } else {
    u.pending = reduce_scatter(full, u.grads.view(reduce_, S));
    grad_pool_[static_cast<std::size_t>(u.grad_buffer)].last_reduce = u.pending;
  }
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
  for (auto& up : units_) {
    Unit& u = *up;
    ZS_CHECK(u.grad_state == GradState::reducing, "rank {}: step() but unit '{}' {}", r, u.name,
             u.grad_state == GradState::none
                 ? "got no gradients this step (call grads and reduce_grads for every unit)"
                 : fmt::format("was reduced after {} of {} micro-batches", u.micro_batches, accum));
    wait_timed(u.pending, &u);
    u.grad_state = GradState::reduced;
  }
  // Stages 0-1 (and 2-3 with accumulation) keep whole-unit gradients; stages 2-3 otherwise keep a shard.
  const bool full_grads = stage <= 1 || accum > 1;
  // Global gradient norm: per-unit sums of squares, one all-reduce over the shards.
  // Each unit's sum lands in the device's scratch: a unit updated on the device is summed now, an offloaded
  // one was summed behind its reduce (reduce_grads).
  std::vector<float>& host = norm_host_;
  float* sums = static_cast<float*>(norm_scratch_.data());
  bool on_device = false;
  for (std::size_t i = 0; i < units_.size(); ++i) {
    if (units_[i]->pipe >= 0) continue;
    kernels::sum_squares(device_, grad_shard(*units_[i], full_grads), sums + i, compute_stream_.get());
    on_device = true;
  }
  if (offload_) {
    reduce_stream_->synchronize();
    // The gradient buffers are zeroed or handed to the next step's units (finish_step) only once their
    // shards are on the host.
    consume(offload_->downloads_done());
  }
  if (on_device) compute_stream_->synchronize();
  memory_copy(host.data(), Device::cpu(), sums, device_, host.size() * sizeof(float));
  float total = 0.0f;
  for (float s : host) total += s;
  if (stage >= 1) {
    TensorView t = norm_scratch_.view(DType::f32, num_units() + 1).slice(num_units(), 1);
    memory_copy(t.data, device_, &total, Device::cpu(), sizeof(float));
    Work w = shards_->all_reduce(t, t, ReduceOp::sum);  // the shards: replicas hold the same ones
    wait_timed(w);
    memory_copy(&total, Device::cpu(), t.data, device_, sizeof(float));
  }
  const double scale = dynamic_scaling_ ? scaler_.scale : 1.0;
  const double norm = std::sqrt(static_cast<double>(total)) / accum / scale;
  StepStats st;
  st.loss_scale = scale;
  if (dynamic_scaling_ && scaler_.update(!std::isfinite(norm))) {
    // Overflow: no update this step, a smaller scale for the next; the scaled gradients are dropped.
    st.skipped = true;
    st.grad_norm = norm;
    st.lr = cfg_.schedule.lr(cfg_.optimizer.lr, step_ + 1);
    st.step = step_;
    finish_step(full_grads);
    return st;
  }
  if (!std::isfinite(norm)) {
    // An early update has been changing the units as they landed: let it finish before reporting, so
    // nothing is in flight when the caller resumes from a checkpoint.
    if (early_started_) offload_->drain();
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
      a.param_out = static_cast<char*>(u.full_params.data()) + lo * static_cast<int64_t>(es(compute_));
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
  if (frozen) {
    if (stage <= 2)
      full = static_cast<const char*>(u.full_params.data()) + u.layout.padded * static_cast<int64_t>(es(t));
    else
      shard = static_cast<const char*>(u.frozen_shard.data());
  } else {
    const char* master = static_cast<const char*>(u.master.data() ? u.master.data() : u.full_params.data());
    if (stage == 0)
      full = master;
    else
      shard = u.master.data() ? master : master + l.shard * r * 4;
  }
  compute_stream_->synchronize();
  if (offload_) offload_->drain();  // the master is on the host, maybe still being updated
  Buffer tmp;
  if (!full) {
    tmp = Buffer(l.padded * es(t), MemoryKind::device, device_, MemCategory::other);
    TensorView fv = tmp.view(t, l.padded);
    memory_copy(fv.slice(l.shard * r, l.shard).data, device_, shard, device_, l.shard * es(t));
    shards_->all_gather(fv.slice(l.shard * r, l.shard), fv).wait();
    full = static_cast<const char*>(tmp.data());
  }
  std::vector<uint8_t> raw(static_cast<std::size_t>(slot.numel) * es(t));
  memory_copy(raw.data(), Device::cpu(), full + slot.offset * static_cast<int64_t>(es(t)), device_, raw.size());
  std::vector<float> out(static_cast<std::size_t>(slot.numel));
  for (std::size_t e = 0; e < out.size(); ++e) out[e] = load_as_f32(raw.data(), t, e);
  return out;
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
