// Checkpoint manifest, layout-free pieces, the atomic commit and the verifying reader.
#include "runtime/checkpoint.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "runtime/safetensors.h"
#include "runtime/weight_files.h"

namespace zs::ckpt {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr std::string_view kStepPrefix = "step-";

DType dtype_from(const std::string& s, const std::string& source, const std::string& where) {
  for (DType t : {DType::f32, DType::bf16, DType::f16, DType::f64})
    if (dtype_name(t) == s) return t;
  ZS_FAIL("{}: {}: dtype '{}' is not one of f32, bf16, f16, f64", source, where, s);
}

const char* schedule_name(ScheduleKind k) {
  return k == ScheduleKind::cosine ? "cosine" : k == ScheduleKind::linear ? "linear" : "constant";
}

// Typed, named access to the manifest's fields: a missing key or a wrong type is an error naming both.
struct Fields {
  const json& j;
  std::string where;
  const std::string& source;

  const json& at(const char* key) const {
    ZS_CHECK(j.is_object() && j.contains(key), "{}: {} has no '{}'", source, where, key);
    return j[key];
  }
  template <typename T>
  T get(const char* key) const {
    const json& v = at(key);
    bool ok = false;
    if constexpr (std::is_same_v<T, bool>)
      ok = v.is_boolean();
    else if constexpr (std::is_integral_v<T>)
      ok = v.is_number_integer();
    else if constexpr (std::is_floating_point_v<T>)
      ok = v.is_number();
    else
      ok = v.is_string();
    ZS_CHECK(ok, "{}: {}.{} has the wrong type ({})", source, where, key, v.type_name());
    return v.get<T>();
  }
  const json& array(const char* key) const {
    const json& v = at(key);
    ZS_CHECK(v.is_array(), "{}: {}.{} must be an array", source, where, key);
    return v;
  }
};

bool is_step_dir(const fs::path& p) {
  const std::string n = p.filename().string();
  return n.size() > kStepPrefix.size() && n.starts_with(kStepPrefix) &&
         std::all_of(n.begin() + static_cast<std::ptrdiff_t>(kStepPrefix.size()), n.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

// The step number a step directory's name holds.
int64_t step_of(const fs::path& p) {
  return std::stoll(p.filename().string().substr(kStepPrefix.size()));
}

// The step directories under `root` that hold a manifest (complete checkpoints), oldest first.
std::vector<fs::path> complete_steps(const fs::path& root) {
  std::vector<fs::path> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && is_step_dir(e.path()) && fs::exists(e.path() / "manifest.json", ec))
      steps.push_back(e.path());
  std::sort(steps.begin(), steps.end(), [](const fs::path& a, const fs::path& b) { return step_of(a) < step_of(b); });
  return steps;
}

// The fix for a damaged file of step directory `dir`: the newest complete checkpoint before it, and how to
// resume from that one.
std::string earlier_checkpoint(const fs::path& dir) {
  if (!is_step_dir(dir)) return "load another checkpoint";  // a directory outside a checkpoint root
  const fs::path root = dir.parent_path();
  std::string best;
  for (const fs::path& p : complete_steps(root))
    if (step_of(p) < step_of(dir)) best = p.filename().string();
  if (best.empty()) return fmt::format("'{}' holds no earlier checkpoint to load instead", root.string());
  return fmt::format(
      "load an earlier checkpoint: '{}' is the newest before it (write '{}' into '{}' to resume from it)",
      (root / best).string(), best, (root / "latest").string());
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  ZS_CHECK(f.good(), "cannot read '{}'", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorEntry* Manifest::find(std::string_view tensor) const {
  for (const auto& t : tensors)
    if (t.name == tensor) return &t;
  return nullptr;
}

std::string step_dir_name(int64_t step) {
  return fmt::format("{}{:08d}", kStepPrefix, step);
}

std::string rank_file_name(int rank) {
  return fmt::format("rank-{:05d}.safetensors", rank);
}

std::string entry_name(std::string_view tensor, std::string_view state) {
  return fmt::format("{}/{}", tensor, state);
}

std::vector<std::string> state_names(std::string_view optimizer) {
  if (optimizer == "adamw" || optimizer == "adam") return {"exp_avg", "exp_avg_sq"};
  if (optimizer == "sgd") return {"momentum_buffer"};
  if (optimizer == "lion") return {"exp_avg"};
  return {};
}

std::pair<int64_t, int64_t> owned_range(const FlatLayout& l, int rank, int writers) {
  if (l.world == writers) return {l.shard * rank, l.shard * (rank + 1)};
  const int64_t chunk = (l.padded + writers - 1) / writers;
  return {std::min(l.padded, chunk * rank), std::min(l.padded, chunk * (rank + 1))};
}

int64_t file_elements(const FlatLayout& l, int file, int writers) {
  std::vector<Piece> pieces;
  for (const FlatLayout::Slot& slot : l.slots) add_pieces(l, slot, writers, pieces);
  int64_t n = 0;
  for (const Piece& p : pieces) n += p.file == file ? p.count : 0;
  return n;
}

void add_pieces(const FlatLayout& l, const FlatLayout::Slot& slot, int writers, std::vector<Piece>& out) {
  for (int w = 0; w < writers; ++w) {
    const auto [lo, hi] = owned_range(l, w, writers);
    const int64_t b = std::max(lo, slot.offset), e = std::min(hi, slot.offset + slot.numel);
    if (b < e) out.push_back({w, b - slot.offset, e - b});
  }
}

// ---- manifest JSON ------------------------------------------------------------------------------------

std::string to_json(const Manifest& m) {
  json j;
  j["format"] = kFormat;
  j["version"] = m.version;
  j["step"] = m.step;
  j["world_size"] = m.world_size;
  j["stage"] = m.stage;
  j["param_dtype"] = dtype_name(m.param_dtype);
  j["optimizer"] = {{"type", m.optimizer}, {"states", m.states}, {"hyper", m.hyper}};
  j["schedule"] = {{"type", schedule_name(m.schedule.kind)},
                   {"warmup_steps", m.schedule.warmup_steps},
                   {"total_steps", m.schedule.total_steps},
                   {"min_lr_ratio", m.schedule.min_lr_ratio}};
  j["loss_scaler"] = {{"scale", m.scaler.scale},
                      {"window", m.scaler.window},
                      {"hysteresis", m.scaler.hysteresis},
                      {"clean_steps", m.scaler.clean_steps},
                      {"windows_to_wait", m.scaler.windows_to_wait}};
  j["user_state"] = m.user_state;
  // One line per field, per file and per tensor: readable, diffable, and small for big models.
  std::string out = "{\n";
  for (auto it = j.begin(); it != j.end(); ++it)
    out += fmt::format("  {}: {},\n", json(it.key()).dump(), it.value().dump());
  out += "  \"files\": [";
  for (std::size_t i = 0; i < m.files.size(); ++i) {
    const auto& f = m.files[i];
    out += (i ? ",\n    " : "\n    ") +
           json({{"name", f.name}, {"bytes", f.digest.bytes}, {"xxh64", hex64(f.digest.xxh64)}}).dump();
  }
  out += "\n  ],\n  \"tensors\": [";
  for (std::size_t i = 0; i < m.tensors.size(); ++i) {
    const auto& t = m.tensors[i];
    json pieces = json::array();
    for (const auto& p : t.pieces) pieces.push_back({p.file, p.first, p.count});
    out += (i ? ",\n    " : "\n    ") + json({{"name", t.name},
                                              {"unit", t.unit},
                                              {"shape", t.shape},
                                              {"dtype", dtype_name(t.dtype)},
                                              {"trainable", t.trainable},
                                              {"weight_decay", t.weight_decay},
                                              {"pieces", pieces}})
                                            .dump();
  }
  return out + "\n  ]\n}\n";
}

Manifest parse_manifest(std::string_view text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    ZS_FAIL("{}: not valid JSON: {}", source, e.what());
  }
  const Fields top{j, "the manifest", source};
  ZS_CHECK(j.is_object() && j.contains("format") && j["format"] == kFormat,
           "{}: not a ZeroShard checkpoint manifest (no \"format\": \"{}\")", source, kFormat);
  Manifest m;
  m.version = top.get<int>("version");
  ZS_CHECK(m.version >= 1 && m.version <= kFormatVersion,
           "{}: checkpoint format version {} is unknown to this build, which reads version{} {}; {}", source, m.version,
           kFormatVersion == 1 ? "" : "s up to", kFormatVersion,
           m.version > kFormatVersion ? "load it with the newer ZeroShard that wrote it" : "the manifest is damaged");
  m.step = top.get<int64_t>("step");
  m.world_size = top.get<int>("world_size");
  m.stage = top.get<int>("stage");
  ZS_CHECK(m.step >= 0 && m.world_size >= 1 && m.stage >= 0 && m.stage <= 3,
           "{}: step {}, world_size {} or stage {} is out of range", source, m.step, m.world_size, m.stage);
  m.param_dtype = dtype_from(top.get<std::string>("param_dtype"), source, "param_dtype");
  const Fields opt{top.at("optimizer"), "optimizer", source};
  m.optimizer = opt.get<std::string>("type");
  for (const auto& s : opt.array("states")) {
    ZS_CHECK(s.is_string(), "{}: optimizer.states must hold strings", source);
    m.states.push_back(s.get<std::string>());
  }
  ZS_CHECK(m.states == state_names(m.optimizer), "{}: optimizer '{}' with states [{}] is not one this build knows",
           source, m.optimizer, fmt::join(m.states, ", "));
  const json& hyper = opt.at("hyper");
  ZS_CHECK(hyper.is_object(), "{}: optimizer.hyper must be an object", source);
  for (auto it = hyper.begin(); it != hyper.end(); ++it) {
    ZS_CHECK(it.value().is_number(), "{}: optimizer.hyper.{} must be a number", source, it.key());
    m.hyper[it.key()] = it.value().get<double>();
  }
  const Fields sch{top.at("schedule"), "schedule", source};
  const std::string kind = sch.get<std::string>("type");
  m.schedule.kind = kind == "cosine"   ? ScheduleKind::cosine
                    : kind == "linear" ? ScheduleKind::linear
                                       : ScheduleKind::constant;
  m.schedule.warmup_steps = sch.get<int64_t>("warmup_steps");
  m.schedule.total_steps = sch.get<int64_t>("total_steps");
  m.schedule.min_lr_ratio = sch.get<double>("min_lr_ratio");
  const Fields sc{top.at("loss_scaler"), "loss_scaler", source};
  m.scaler.scale = sc.get<double>("scale");
  m.scaler.window = sc.get<int64_t>("window");
  m.scaler.hysteresis = sc.get<int>("hysteresis");
  m.scaler.clean_steps = sc.get<int64_t>("clean_steps");
  m.scaler.windows_to_wait = sc.get<int>("windows_to_wait");
  ZS_CHECK(m.scaler.scale > 0 && m.scaler.window > 0, "{}: loss_scaler has a non-positive scale or window", source);
  m.user_state = top.get<std::string>("user_state");

  for (const auto& f : top.array("files")) {
    const Fields ff{f, fmt::format("files[{}]", m.files.size()), source};
    FileEntry e;
    e.name = ff.get<std::string>("name");
    ZS_CHECK(!e.name.empty() && e.name.find('/') == std::string::npos && e.name != "." && e.name != "..",
             "{}: {}.name '{}' must be a plain file name", source, ff.where, e.name);
    e.digest.bytes = ff.get<uint64_t>("bytes");
    const std::string h = ff.get<std::string>("xxh64");
    ZS_CHECK(h.size() == 16 && h.find_first_not_of("0123456789abcdef") == std::string::npos,
             "{}: {}.xxh64 '{}' is not 16 hex digits", source, ff.where, h);
    e.digest.xxh64 = std::stoull(h, nullptr, 16);
    m.files.push_back(std::move(e));
  }
  std::set<std::string> names;
  for (const auto& t : top.array("tensors")) {
    const Fields tf{t, fmt::format("tensors[{}]", m.tensors.size()), source};
    TensorEntry e;
    e.name = tf.get<std::string>("name");
    ZS_CHECK(names.insert(e.name).second, "{}: tensor '{}' appears twice", source, e.name);
    e.unit = tf.get<std::string>("unit");
    int64_t numel = 1;
    for (const auto& d : tf.array("shape")) {
      ZS_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0 && d.get<int64_t>() <= (int64_t{1} << 40),
               "{}: tensor '{}' has a shape entry that is not a size", source, e.name);
      e.shape.push_back(d.get<int64_t>());
      numel *= e.shape.back();
      ZS_CHECK(numel <= (int64_t{1} << 48), "{}: tensor '{}' is absurdly large", source, e.name);
    }
    e.dtype = dtype_from(tf.get<std::string>("dtype"), source, e.name);
    e.trainable = tf.get<bool>("trainable");
    e.weight_decay = tf.get<bool>("weight_decay");
    int64_t next = 0;
    for (const auto& p : tf.array("pieces")) {
      ZS_CHECK(p.is_array() && p.size() == 3 && p[0].is_number_integer() && p[1].is_number_integer() &&
                   p[2].is_number_integer(),
               "{}: tensor '{}': a piece must be [file, first, count]", source, e.name);
      Piece pc{p[0].get<int>(), p[1].get<int64_t>(), p[2].get<int64_t>()};
      ZS_CHECK(pc.file >= 0 && pc.file < static_cast<int>(m.files.size()),
               "{}: tensor '{}': a piece names file #{} of {}", source, e.name, pc.file, m.files.size());
      ZS_CHECK(pc.first == next && pc.count > 0 && pc.count <= numel - next,
               "{}: tensor '{}': piece [{}, +{}) does not continue the tensor at element {} of {}", source, e.name,
               pc.first, pc.count, next, numel);
      next += pc.count;
      e.pieces.push_back(pc);
    }
    ZS_CHECK(next == numel, "{}: tensor '{}': its pieces cover {} of {} elements", source, e.name, next, numel);
    m.tensors.push_back(std::move(e));
  }
  return m;
}

// ---- directories ------------------------------------------------------------------------------------

std::string resolve(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  ZS_CHECK(fs::is_directory(d, ec), "checkpoint directory '{}' does not exist (or is not a directory)", dir);
  if (fs::exists(d / "manifest.json", ec)) return d.string();
  if (fs::exists(d / "latest", ec)) {
    std::string name = read_text(d / "latest");
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    ZS_CHECK(is_step_dir(name), "'{}' names '{}', which is not a step directory", (d / "latest").string(), name);
    ZS_CHECK(fs::exists(d / name / "manifest.json", ec), "'{}' names '{}', but '{}' has no manifest.json",
             (d / "latest").string(), name, (d / name).string());
    return (d / name).string();
  }
  ZS_FAIL("'{}' holds no checkpoint: neither manifest.json (a step directory) nor latest (a checkpoint root)", dir);
}

std::string find_latest(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(fs::path(root) / "latest", ec)) return "";
  return resolve(root);
}

void commit(const std::string& root, const std::string& tmp, const Manifest& m, int keep) {
  const fs::path r(root), final_dir = r / step_dir_name(m.step);
  write_file_atomic((fs::path(tmp) / "manifest.json").string(), to_json(m));
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {  // the same step saved again: the new one replaces it
    const fs::path old = r / (step_dir_name(m.step) + ".old");
    fs::remove_all(old, ec);
    fs::rename(final_dir, old);
    fs::remove_all(old, ec);
  }
  fs::rename(tmp, final_dir);
  fsync_dir(root);
  write_file_atomic((r / "latest").string(), step_dir_name(m.step) + "\n");
  // Keep the newest `keep` complete step directories (and never the one `latest` names).
  const std::vector<fs::path> steps = complete_steps(r);
  const std::size_t k = static_cast<std::size_t>(std::max(1, keep));
  for (std::size_t i = 0; i + k < steps.size(); ++i)
    if (steps[i] != final_dir) fs::remove_all(steps[i], ec);
}

// ---- reader -------------------------------------------------------------------------------------------

Reader::Reader(const std::string& dir) : dir_(resolve(dir)) {
  const std::string path = (fs::path(dir_) / "manifest.json").string();
  manifest_ = parse_manifest(read_text(path), path);
}

Reader::~Reader() = default;

void Reader::verify(int file) {
  if (open_.count(file)) return;
  const FileEntry& f = manifest_.files.at(static_cast<std::size_t>(file));
  const std::string path = (fs::path(dir_) / f.name).string();
  std::error_code ec;
  ZS_CHECK(fs::exists(path, ec), "checkpoint file '{}' is missing (the manifest lists it: {} bytes); {}", path,
           f.digest.bytes, earlier_checkpoint(dir_));
  const uint64_t size = fs::file_size(path, ec);
  ZS_CHECK(size == f.digest.bytes, "checkpoint file '{}' has {} bytes but the manifest says {}: {}; {}", path, size,
           f.digest.bytes, size < f.digest.bytes ? "it is truncated" : "it was changed after the checkpoint was saved",
           earlier_checkpoint(dir_));
  const FileDigest d = digest_file(path);
  ZS_CHECK(d.xxh64 == f.digest.xxh64,
           "checkpoint file '{}' is corrupt: its xxHash64 is {} but the manifest says {}; {}", path, hex64(d.xxh64),
           hex64(f.digest.xxh64), earlier_checkpoint(dir_));
  open_[file] = std::make_unique<SafetensorsFile>(path);
}

SafetensorsFile& Reader::open(int file) {
  verify(file);
  return *open_.at(file);
}

std::vector<int> Reader::files_for(const TensorEntry& t, int64_t first, int64_t count) const {
  std::vector<int> out;
  for (const auto& p : t.pieces)
    if (p.first < first + count && first < p.first + p.count && (out.empty() || out.back() != p.file))
      out.push_back(p.file);
  return out;
}

void Reader::read(const TensorEntry& t, std::string_view state, int64_t first, int64_t count, float* out) {
  ZS_CHECK(first >= 0 && count >= 0 && first + count <= t.numel(), "{}: reading [{}, {}) of tensor '{}' ({} elements)",
           dir_, first, first + count, t.name, t.numel());
  for (const auto& p : t.pieces) {
    const int64_t b = std::max(first, p.first), e = std::min(first + count, p.first + p.count);
    if (b >= e) continue;
    SafetensorsFile& f = open(p.file);
    const SafetensorsTensor& st = f.tensor(entry_name(t.name, state));
    ZS_CHECK(st.numel() == p.count, "{}: entry '{}' has {} elements but the manifest's piece has {}", f.path(), st.name,
             st.numel(), p.count);
    f.read_f32(st, b - p.first, e - b, out + (b - first));
  }
}

uint64_t verify_all(Reader& r) {
  const Manifest& m = r.manifest();
  uint64_t bytes = 0;
  for (int f = 0; f < static_cast<int>(m.files.size()); ++f) {
    r.verify(f);
    bytes += m.files[static_cast<std::size_t>(f)].digest.bytes;
  }
  std::vector<std::string> states{std::string(kParam)};
  states.insert(states.end(), m.states.begin(), m.states.end());
  for (const auto& t : m.tensors)
    for (const auto& p : t.pieces)
      for (const auto& s : states) {
        if (s != kParam && !t.trainable) continue;
        const SafetensorsTensor& st = r.open(p.file).tensor(entry_name(t.name, s));
        ZS_CHECK(st.numel() == p.count && st.dtype == (s == kParam ? t.dtype : DType::f32),
                 "{}: entry '{}' is {} x {} but the manifest expects {} x {}", r.open(p.file).path(), st.name,
                 st.numel(), dtype_name(st.dtype), p.count, dtype_name(s == kParam ? t.dtype : DType::f32));
      }
  return bytes;
}

void export_safetensors(Reader& r, const std::string& out, DType dtype, int64_t max_file_bytes) {
  ZS_CHECK(dtype == DType::f32 || dtype == DType::bf16, "export: dtype {} is not f32 or bf16", dtype_name(dtype));
  const Manifest& m = r.manifest();
  std::vector<SafetensorsTensor> decl;
  for (const auto& t : m.tensors) decl.push_back({t.name, dtype, t.shape, 0, 0});
  WeightsWriter w(out, std::move(decl),
                  {{"format", "pt"}, {"step", std::to_string(m.step)}, {"source", std::string(kFormat)}},
                  max_file_bytes);
  std::vector<float> values;
  std::vector<uint8_t> cast;
  for (const auto& t : m.tensors) {
    values.resize(static_cast<std::size_t>(t.numel()));
    r.read(t, kParam, 0, t.numel(), values.data());
    cast.resize(values.size() * dtype_size(dtype));
    for (std::size_t e = 0; e < values.size(); ++e) store_from_f32(cast.data(), dtype, e, values[e]);
    w.write_tensor(cast.data(), cast.size());
  }
  w.finish();
}

std::string diff_tensors(const std::vector<TensorEntry>& saved, const std::vector<TensorEntry>& model,
                         std::string_view source, bool extras_differ) {
  std::string out, extras;
  auto line = [](std::string& to, const std::string& s) { to += (to.empty() ? "" : "\n") + ("  " + s); };
  auto shape = [](const TensorEntry& t) { return fmt::format("[{}]", fmt::join(t.shape, ", ")); };
  std::unordered_map<std::string_view, const TensorEntry*> in_saved, in_model;
  for (const auto& t : saved) in_saved.emplace(t.name, &t);
  for (const auto& t : model) in_model.emplace(t.name, &t);
  for (const auto& want : model) {
    const auto it = in_saved.find(want.name);
    if (it == in_saved.end())
      line(out, fmt::format("{} {}: in the model, not in the {}", want.name, shape(want), source));
    else if (it->second->shape != want.shape)
      line(out,
           fmt::format("{}: shape {} in the {}, {} in the model", want.name, shape(*it->second), source, shape(want)));
    else if (it->second->trainable != want.trainable)
      line(out,
           fmt::format("{}: {} in the {}, {} in the model", want.name, it->second->trainable ? "trainable" : "frozen",
                       source, want.trainable ? "trainable" : "frozen"));
  }
  for (const auto& have : saved)
    if (!in_model.count(have.name))
      line(extras_differ ? out : extras,
           fmt::format("{} {}: in the {}, not in the model", have.name, shape(have), source));
  if (out.empty() || extras.empty()) return out;
  return out + fmt::format("\n  (and, not needed by the model, in the {} only:)\n", source) + extras;
}

}  // namespace zs::ckpt
