// Engine::save_checkpoint / load_checkpoint: each rank writes the tensor pieces of its shards, rank 0 commits
// once every rank has; loading reads the pieces overlapping this rank's shards of the current layout.
// Engine::save_weights: the full parameters in one safetensors file.
#include <fmt/ranges.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "runtime/async_checkpoint.h"
#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "runtime/safetensors.h"
#include "runtime/weight_files.h"

namespace zs {
namespace fs = std::filesystem;

namespace {

// A u64 as four exact 16-bit floats (control messages travel as f32).
void put_u64(std::vector<float>& out, uint64_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<float>((v >> (16 * i)) & 0xffff));
}
// A float as the double its shortest decimal form names (0.003f is stored as 0.003, not 0.00300000002607).
double decimal(float f) {
  return std::stod(fmt::format("{}", f));
}

uint64_t get_u64(const float* p) {
  uint64_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint64_t>(p[i]) << (16 * i);
  return v;
}

// Runs f, turning an exception into (ok = false, error = its message): ranks must reach the next
// agreement point even when their part failed.
template <typename F>
void attempt(bool& ok, std::string& error, F&& f) {
  if (!ok) return;
  try {
    f();
  } catch (const std::exception& e) {
    ok = false;
    error = e.what();
  }
}

}  // namespace

Buffer& Engine::control() {
  if (!control_.data())
    control_ = Buffer(static_cast<std::size_t>(kControlFloats * comm_->size()) * sizeof(float), MemoryKind::device,
                      device_, MemCategory::other);
  return control_;
}

std::vector<float> Engine::all_gather_host(const std::vector<float>& mine) {
  const int n = comm_->size();
  const int64_t k = static_cast<int64_t>(mine.size());
  ZS_CHECK(k <= kControlFloats, "all_gather_host: a control message of {} floats exceeds the buffer's {}", k,
           kControlFloats);
  TensorView all = control().view(DType::f32, n * k), slot = all.slice(k * comm_->rank(), k);
  memory_copy(slot.data, device_, mine.data(), Device::cpu(), mine.size() * sizeof(float));
  comm_->all_gather(slot, all).wait();
  std::vector<float> out(static_cast<std::size_t>(n * k));
  memory_copy(out.data(), Device::cpu(), all.data, device_, out.size() * sizeof(float));
  return out;
}

void Engine::agree(bool ok, const std::string& what, const std::string& error) {
  // Each rank sends its verdict and the head of its error, so every rank's message says what went wrong.
  constexpr auto kChars = static_cast<std::size_t>(kControlFloats - 1);
  std::vector<float> mine(1 + kChars, 0.0f);
  mine[0] = ok ? 1.0f : 0.0f;
  for (std::size_t i = 0; i < std::min(kChars, error.size()); ++i) mine[1 + i] = static_cast<unsigned char>(error[i]);
  const std::vector<float> all = all_gather_host(mine);
  std::vector<int> failed;
  std::string first;
  for (int r = 0; r < comm_->size(); ++r) {
    const float* rec = all.data() + (1 + kChars) * static_cast<std::size_t>(r);
    if (rec[0] != 0.0f) continue;
    failed.push_back(r);
    if (failed.size() > 1) continue;
    for (std::size_t i = 0; i < kChars && rec[1 + i] != 0.0f; ++i) first += static_cast<char>(rec[1 + i]);
  }
  if (failed.empty()) return;
  ZS_FAIL("rank {}: {} failed on rank{} {}: {}", comm_->rank(), what, failed.size() > 1 ? "s" : "",
          fmt::join(failed, ", "), ok ? first : error);
}

void Engine::quiesce(const char* op) {
  ZS_CHECK(ready_, "{}: call init_params (or load_checkpoint) first", op);
  for (auto& up : units_) {
    Unit& u = *up;
    ZS_CHECK(u.holders == 0 && (u.grad_state == GradState::none),
             "rank {}: {} in the middle of a step (unit '{}' is {}); call it between step() and the next forward",
             comm_->rank(), op, u.name, u.holders > 0 ? "gathered" : "holding gradients");
  }
  if (offload_) {  // the CPU step finishes and the replicas (stages 1-2) are whole again, on every rank alike
    for (int id = 0; id < num_units(); ++id)
      if (units_[static_cast<std::size_t>(id)]->param_state == ParamState::updating) refresh_replica(id);
    offload_->drain();
  }
  for (auto& up : units_) {
    Unit& u = *up;
    u.pending.wait();  // a prefetch or a replica all-gather
    u.param_state = ParamState::sharded;
    u.gather_buffer = -1;
  }
  for (auto& b : gather_pool_) b.owner = -1;
  for (Stream* s : {gather_stream_.get(), reduce_stream_.get(), compute_stream_.get()}) s->synchronize();
}

void Engine::synchronize() {
  quiesce("synchronize");
}

ckpt::Manifest Engine::describe_checkpoint() const {
  const auto& o = cfg_.optimizer;
  ckpt::Manifest m;
  m.step = step_;
  m.world_size = shard_size();  // with hybrid sharding, one shard group's files (the replicas hold the same)
  m.stage = cfg_.zero.stage;
  m.param_dtype = compute_;
  m.optimizer = kernels::optimizer_name(o.type);
  const auto names = ckpt::state_names(m.optimizer);
  const OptimizerStates states = optimizer_states(cfg_);
  if (states.m) m.states.push_back(names.at(0));
  if (states.v) m.states.push_back(names.at(1));
  m.hyper = {{"lr", decimal(o.lr)},
             {"beta1", decimal(o.beta1)},
             {"beta2", decimal(o.beta2)},
             {"eps", decimal(o.eps)},
             {"weight_decay", decimal(o.weight_decay)},
             {"clip_grad_norm", decimal(o.clip_grad_norm)},
             {"momentum", decimal(o.momentum)},
             {"dampening", decimal(o.dampening)},
             {"nesterov", o.nesterov ? 1.0 : 0.0}};
  m.schedule = cfg_.schedule;
  m.scaler = scaler_;
  for (int w = 0; w < shard_size(); ++w) m.files.push_back({ckpt::rank_file_name(w), {}});
  m.tensors = tensor_entries();
  std::size_t k = 0;
  for (const auto& up : units_) {
    const Unit& u = *up;
    for (int i = 0; i < static_cast<int>(u.tensors.size()); ++i) {
      const FlatLayout& l = u.is_frozen(i) ? u.frozen : u.layout;
      ckpt::add_pieces(l, l.slots[static_cast<std::size_t>(u.slot_of[static_cast<std::size_t>(i)])], shard_size(),
                       m.tensors[k++].pieces);
    }
  }
  return m;
}

std::vector<ckpt::TensorEntry> Engine::tensor_entries() const {
  std::vector<ckpt::TensorEntry> out;
  for (const auto& up : units_)
    for (int i = 0; i < static_cast<int>(up->tensors.size()); ++i) {
      const TensorSpec& t = up->tensors[static_cast<std::size_t>(i)];
      out.push_back({up->full_name(i),
                     up->name,
                     {t.shape.dims.begin(), t.shape.dims.begin() + t.shape.ndim},
                     t.trainable,
                     t.weight_decay,
                     t.trainable ? DType::f32 : compute_,
                     {}});
    }
  return out;
}

struct Engine::RankFile {
  std::vector<SafetensorsTensor> tensors;
  std::map<std::string, std::string> metadata;
  struct Part {
    const char* src;  // on the engine's device (null for a part on disk)
    std::size_t bytes;
    // offload.optimizer: nvme: the part is at byte `offset` of part `disk_part` (master, m, v) of unit
    // pipe `disk_unit`'s state on disk.
    int disk_unit = -1, disk_part = 0;
    int64_t offset = 0;
  };
  std::vector<Part> parts;  // the tensors' bytes, in order
};

Engine::RankFile Engine::rank_file(const ckpt::Manifest& m) const {
  const int r = shard_rank(), stage = cfg_.zero.stage;
  // Where flat element x of a unit's layout lives on the device, for the stored parameter and the states.
  struct Source {
    const char* base;  // null: on disk, part disk_part of the unit's state
    int64_t origin;    // the flat index of base[0]
    DType dtype;
    int disk_part = 0;
  };
  const offload::StateSwap* swap = offload_ ? offload_->swap() : nullptr;
  RankFile f;
  f.metadata = {{"format", std::string(ckpt::kFormat)}, {"rank", std::to_string(r)}, {"step", std::to_string(step_)}};
  std::size_t ti = 0;
  for (const auto& up : units_) {
    const Unit& u = *up;
    const int64_t S = u.layout.shard, SF = u.frozen.shard;
    const auto* full = static_cast<const char*>(u.full_params.data());
    for (int i = 0; i < static_cast<int>(u.tensors.size()); ++i) {
      const ckpt::TensorEntry& e = m.tensors[ti++];
      std::vector<Source> sources;
      if (u.is_frozen(i)) {
        if (stage <= 2)
          sources.push_back({full + u.layout.padded * static_cast<int64_t>(dtype_size(compute_)), 0, compute_});
        else
          sources.push_back({static_cast<const char*>(u.frozen_shard.data()), SF * r, compute_});
      } else if (swap && u.pipe >= 0) {  // the state on disk: this rank's shard of each part
        const offload::SwapRegion& region = swap->region(u.pipe);
        sources.push_back({nullptr, S * r, DType::f32, 0});
        for (int k = 1; k <= 2; ++k)
          if (region.bytes[static_cast<std::size_t>(k)] > 0)
            sources.push_back({nullptr, S * r, cfg_.optimizer.state_dtype, k});
      } else {
        const bool shard = stage > 0 && u.master.data();
        sources.push_back(
            {static_cast<const char*>(u.master.data() ? u.master.data() : full), shard ? S * r : 0, DType::f32});
        for (const Buffer* b : {&u.m, &u.v})
          if (b->data())
            sources.push_back({static_cast<const char*>(b->data()), stage > 0 ? S * r : 0, cfg_.optimizer.state_dtype});
      }
      const FlatLayout& l = u.is_frozen(i) ? u.frozen : u.layout;
      const int64_t offset = l.slots[static_cast<std::size_t>(u.slot_of[static_cast<std::size_t>(i)])].offset;
      for (const auto& p : e.pieces) {
        if (p.file != r) continue;
        for (std::size_t k = 0; k < sources.size(); ++k) {
          const Source& src = sources[k];
          const std::string_view state = k == 0 ? ckpt::kParam : std::string_view(m.states[k - 1]);
          const auto es = static_cast<int64_t>(dtype_size(src.dtype));
          f.tensors.push_back({ckpt::entry_name(e.name, state), src.dtype, {p.count}, 0, 0});
          const int64_t at = (offset + p.first - src.origin) * es;
          const auto bytes = static_cast<std::size_t>(p.count * es);
          if (src.base)
            f.parts.push_back({src.base + at, bytes});
          else
            f.parts.push_back({nullptr, bytes, u.pipe, src.disk_part, at});
        }
      }
    }
  }
  return f;
}

FileDigest Engine::write_rank_file(const std::string& path, const ckpt::Manifest& m) {
  RankFile f = rank_file(m);
  SafetensorsWriter w(path, std::move(f.tensors), f.metadata);
  std::vector<char> host;
  for (std::size_t i = 0; i < f.parts.size(); ++i) {
    host.resize(f.parts[i].bytes);
    copy_part(host.data(), f, i);
    w.write(host.data(), host.size());
  }
  return w.finish();
}

void Engine::copy_part(void* dst, const RankFile& f, std::size_t part) {
  const RankFile::Part& p = f.parts[part];
  if (p.disk_unit < 0) return memory_copy(dst, Device::cpu(), p.src, device_, p.bytes);
  // A unit's parts come one after the other, so its state is read from disk once (get() keeps it).
  const offload::StateSwap::Parts state = offload_->swap()->get(p.disk_unit);
  std::memcpy(dst, static_cast<const char*>(state[static_cast<std::size_t>(p.disk_part)]) + p.offset, p.bytes);
}

std::size_t Engine::stage_rank_file(const RankFile& f) {
  std::size_t total = 0;
  for (const RankFile::Part& p : f.parts) total += p.bytes;
  ZS_CHECK(total == ckpt_staging_.bytes(),
           "rank {}: this rank's checkpoint file has {} bytes but its staging {} (a memory-plan bug)", comm_->rank(),
           total, ckpt_staging_.bytes());
  auto* dst = static_cast<char*>(ckpt_staging_.data());
  for (std::size_t i = 0; i < f.parts.size(); ++i) {
    copy_part(dst, f, i);
    dst += f.parts[i].bytes;
  }
  return total;
}

void Engine::wait_checkpoint() {
  if (async_ckpt_) async_ckpt_->wait();
}

void Engine::save_checkpoint(const std::string& root, const std::string& user_state) {
  if (async_ckpt_ && async_ckpt_->busy() && comm_->rank() == 0)
    log::warn(
        "save_checkpoint: the previous checkpoint.async save is still being written; waiting for it (save "
        "less often, or to faster storage)");
  wait_checkpoint();
  quiesce("save_checkpoint");
  // The first shard group writes (file w is shard w); with hybrid sharding the other groups hold copies.
  const int n = shard_size(), r = comm_->rank();
  const bool writes = r < n;
  ckpt::Manifest m = describe_checkpoint();
  m.user_state = user_state;
  const fs::path tmp = fs::path(root) / (ckpt::step_dir_name(step_) + ".tmp");
  const std::string what =
      fmt::format("save_checkpoint('{}') of step {} (the previous checkpoint is unchanged)", root, step_);
  bool ok = true;
  std::string error;
  if (r == 0)
    attempt(ok, error, [&] {
      fs::create_directories(root);
      for (const auto& e : fs::directory_iterator(root))  // leftovers of saves that never committed
        if (e.path().extension() == ".tmp" && e.is_directory()) fs::remove_all(e.path());
      fs::create_directories(tmp);
    });
  agree(ok, what, error);
  // From here a failure removes the temporary directory: the previous checkpoint stays the latest.
  auto agree_or_discard = [&](const std::string& stage) {
    try {
      agree(ok, what + stage, error);
    } catch (const Error&) {
      std::error_code ec;
      if (r == 0) fs::remove_all(tmp, ec);
      throw;
    }
  };
  if (async_ckpt_) {  // copy this rank's part; a thread writes and commits it (runtime/async_checkpoint.h)
    AsyncCheckpoint::Save s;
    s.root = root;
    s.tmp_dir = tmp.string();
    s.keep = cfg_.checkpoint.keep;
    s.rank = r;
    s.writes = writes;
    s.writers = n;
    s.what = fmt::format("save_checkpoint('{}') of step {}", root, step_);
    if (writes)
      attempt(ok, error, [&] {
        RankFile f = rank_file(m);
        s.bytes = stage_rank_file(f);
        s.data = ckpt_staging_.data();
        s.tensors = std::move(f.tensors);
        s.metadata = std::move(f.metadata);
      });
    agree_or_discard(" staging");
    s.manifest = std::move(m);
    s.staged_at = std::chrono::steady_clock::now();
    async_ckpt_->start(std::move(s));
    return;
  }
  FileDigest d;
  if (writes) attempt(ok, error, [&] { d = write_rank_file((tmp / ckpt::rank_file_name(r)).string(), m); });
  agree_or_discard(" writing");
  std::vector<float> mine;
  put_u64(mine, d.bytes);
  put_u64(mine, d.xxh64);
  const std::vector<float> all = all_gather_host(mine);
  for (int w = 0; w < n; ++w)
    m.files[static_cast<std::size_t>(w)].digest = {get_u64(all.data() + 8 * w), get_u64(all.data() + 8 * w + 4)};
  if (r == 0) attempt(ok, error, [&] { ckpt::commit(root, tmp.string(), m, cfg_.checkpoint.keep); });
  agree(ok, what + " committing", error);
  if (r == 0)
    log::info("saved checkpoint of step {} to {}", step_, (fs::path(root) / ckpt::step_dir_name(step_)).string());
}

void Engine::check_checkpoint_dir() {
  if (cfg_.checkpoint.every_steps <= 0) return;
  const fs::path root(cfg_.checkpoint.dir);
  const int r = comm_->rank();
  bool ok = true;
  std::string error;
  if (r < shard_size())  // the ranks that write rank files
    attempt(ok, error, [&] {
      fs::create_directories(root);
      const fs::path probe = root / fmt::format(".write-test-rank{}", r);
      write_file_atomic(probe.string(), "");
      fs::remove(probe);
    });
  if (!ok) error += "; fix checkpoint.dir or its permissions";
  agree(ok,
        fmt::format("the check before training that checkpoint.dir '{}' can be written (every {} steps save there)",
                    root.string(), cfg_.checkpoint.every_steps),
        error);
}

void Engine::load_weights(const std::string& path) {
  ZS_CHECK(!ready_, "load_weights: the parameters were already initialised or loaded");
  WeightFiles files(path);
  // Every name and shape is checked, and every difference listed, before anything is allocated or read.
  std::vector<ckpt::TensorEntry> in_file, model = tensor_entries();
  for (auto& e : model) e.trainable = true;  // a weights file has no frozen tensors
  for (const SafetensorsTensor& t : files.tensors()) in_file.push_back({t.name, "", t.shape, true, false, t.dtype, {}});
  const std::string diff = ckpt::diff_tensors(in_file, model, "file", /*extras_differ=*/false);
  ZS_CHECK(diff.empty(), "load_weights('{}'): the file does not fit this model; the tensors that differ:\n{}",
           files.description(), diff);
  setup();
  install([&](const Unit& u, int t, int64_t first, int64_t count, float* out) {
    files.read_f32(u.full_name(t), first, count, out);
  });
  log::debug("load_weights: read {} bytes of {}", files.bytes_read(), files.description());
  last_load_bytes_ = files.bytes_read();
}

void Engine::save_weights(const std::string& path, DType dtype, int64_t max_file_bytes) {
  ZS_CHECK(dtype == DType::f32 || dtype == DType::bf16, "save_weights: dtype {} is not f32 or bf16", dtype_name(dtype));
  quiesce("save_weights");
  const bool writer = comm_->rank() == 0;
  bool ok = true;
  std::string error;
  std::unique_ptr<WeightsWriter> w;
  if (writer)
    attempt(ok, error, [&] {
      std::vector<SafetensorsTensor> decl;
      for (const auto& u : units_)
        for (int i = 0; i < static_cast<int>(u->tensors.size()); ++i) {
          const Shape& s = u->tensors[static_cast<std::size_t>(i)].shape;
          decl.push_back({u->full_name(i), dtype, {s.dims.begin(), s.dims.begin() + s.ndim}, 0, 0});
        }
      w = std::make_unique<WeightsWriter>(
          path, std::move(decl), std::map<std::string, std::string>{{"format", "pt"}, {"step", std::to_string(step_)}},
          max_file_bytes);
    });
  // Every rank takes part in each tensor's gather, even after rank 0 failed to write: nobody is left waiting.
  std::vector<uint8_t> cast;
  for (int u = 0; u < num_units(); ++u)
    for (const auto& t : units_[static_cast<std::size_t>(u)]->tensors) {
      const std::vector<float> v = read_param(u, t.name);
      if (!writer) continue;
      attempt(ok, error, [&] {
        cast.resize(v.size() * dtype_size(dtype));
        for (std::size_t e = 0; e < v.size(); ++e) store_from_f32(cast.data(), dtype, e, v[e]);
        w->write_tensor(cast.data(), cast.size());
      });
    }
  if (writer) attempt(ok, error, [&] { w->finish(); });
  agree(ok, fmt::format("save_weights('{}')", path), error);
}

std::string Engine::load_checkpoint(const std::string& dir) {
  ZS_CHECK(!units_.empty(), "load_checkpoint: add the model's units first");
  wait_checkpoint();  // a checkpoint.async save in flight (perhaps of this very checkpoint)
  if (ready_) quiesce("load_checkpoint");
  plan_layouts();
  const int stage = cfg_.zero.stage, r = shard_rank();
  bool ok = true;
  std::string error;
  std::unique_ptr<ckpt::Reader> reader;
  std::vector<std::vector<const ckpt::TensorEntry*>> entries;  // [unit][tensor]
  attempt(ok, error, [&] {
    reader = std::make_unique<ckpt::Reader>(dir);
    const ckpt::Manifest& m = reader->manifest();
    const std::string diff = ckpt::diff_tensors(m.tensors, tensor_entries());
    ZS_CHECK(diff.empty(), "checkpoint '{}' does not fit this model; the tensors that differ:\n{}", reader->dir(),
             diff);
    const std::string_view want = kernels::optimizer_name(cfg_.optimizer.type);
    ZS_CHECK(m.optimizer == want,
             "checkpoint '{}' holds {} optimizer state ({}), but this run's optimizer.type is {}; resume with "
             "optimizer.type: {}",
             reader->dir(), m.optimizer, fmt::join(m.states, ", "), want, m.optimizer);
    // Verify every file this rank will read before anything changes.
    for (const auto& up : units_) {
      const Unit& u = *up;
      entries.emplace_back();
      for (int i = 0; i < static_cast<int>(u.tensors.size()); ++i) {
        const ckpt::TensorEntry* e = m.find(u.full_name(i));
        entries.back().push_back(e);
        const FlatLayout& l = u.is_frozen(i) ? u.frozen : u.layout;
        const auto& slot = l.slots[static_cast<std::size_t>(u.slot_of[static_cast<std::size_t>(i)])];
        const int64_t lo = stage == 0 ? 0 : l.shard * r, hi = stage == 0 ? l.padded : lo + l.shard;
        const int64_t b = std::max(lo, slot.offset), en = std::min(hi, slot.offset + slot.numel);
        if (b < en)
          for (int f : reader->files_for(*e, b - slot.offset, en - b)) reader->verify(f);
      }
    }
  });
  agree(ok, fmt::format("load_checkpoint('{}')", dir), error);
  const ckpt::Manifest& m = reader->manifest();
  if (!ready_) setup();
  auto entry = [&](const Unit& u, int t) -> const ckpt::TensorEntry& {
    const auto it = std::find_if(units_.begin(), units_.end(), [&](const auto& p) { return p.get() == &u; });
    return *entries[static_cast<std::size_t>(it - units_.begin())][static_cast<std::size_t>(t)];
  };
  const std::vector<std::string> names = ckpt::state_names(m.optimizer);
  install([&](const Unit& u, int t, int64_t first, int64_t count,
              float* out) { reader->read(entry(u, t), ckpt::kParam, first, count, out); },
          [&](const Unit& u, int t, int which, int64_t first, int64_t count, float* out) {
            const std::string& state = names.at(static_cast<std::size_t>(which - 1));
            if (std::find(m.states.begin(), m.states.end(), state) == m.states.end())
              std::fill(out, out + count, 0.0f);  // e.g. SGD momentum switched on at resume
            else
              reader->read(entry(u, t), state, first, count, out);
          });
  step_ = m.step;
  if (!scaler_.fixed) {  // the dynamic scale where it was; its window, hysteresis and minimum are the config's
    scaler_.scale = m.scaler.scale;
    scaler_.clean_steps = m.scaler.clean_steps;
    scaler_.windows_to_wait = m.scaler.windows_to_wait;
  }
  if (comm_->rank() == 0)
    log::info("loaded checkpoint of step {} from {} (saved by {} ranks at stage {})", m.step, reader->dir(),
              m.world_size, m.stage);
  return m.user_state;
}

}  // namespace zs
