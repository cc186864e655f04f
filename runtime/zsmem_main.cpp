// zsmem: predict per-rank memory from the engine's own plan (estimate), and measure a real run against it.
#include <sys/wait.h>

#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

#include "core/byte_size.h"
#include "core/error.h"
#include "runtime/checkpoint.h"
#include "runtime/cli.h"
#include "runtime/memory_plan.h"
#include "runtime/memory_svg.h"
#include "runtime/model_family.h"
#include "runtime/weight_files.h"

namespace {

namespace fs = std::filesystem;
using zs::format_bytes;
using zs::MemCategory;
constexpr double kGiB = 1073741824.0;

struct Usage : std::runtime_error {  // bad input: exit 2
  using std::runtime_error::runtime_error;
};

// DeepSpeed's published model-state estimators per GPU (estimate_zero2/3_model_states_mem_needs with ZeRO-Init,
// `per_node` GPUs per node): {device, host} bytes, the host's per node divided among its ranks. They count
// model states only; stage 1 uses stage 2's.
struct DeepSpeedFigure {
  double device = NAN, host = NAN;
};
DeepSpeedFigure deepspeed_estimate(int stage, const zs::Config::Offload& offload, double params, double largest,
                                   int world, int per_node) {
  if (stage == 0) return {};
  const double buffer = 1.5;  // their additional_buffer_factor
  if (stage == 3) {
    if (offload.params_offloaded()) return {4 * largest, 18 * params * buffer / world};
    if (offload.optimizer_on_cpu()) return {4 * largest + 2 * params / world, 16 * params * buffer / world};
    return {4 * largest + 18 * params / world, 4 * largest * buffer};
  }
  // Stages 1-2 with offload: their host figure per node grows with the whole world, shared by the node's ranks.
  if (offload.optimizer_on_cpu()) return {2 * params, params * std::max(4.0 * world, 16.0) * buffer / per_node};
  return {4 * params + 16 * params / world, 4 * params * buffer};
}

struct Model {
  std::string what;
  std::vector<std::vector<zs::TensorSpec>> units;
  int64_t params = 0, largest = 0;
  bool gpt = false;
  zs::family::Gpt shape;
  std::optional<zs::ckpt::Manifest> saved;  // --manifest: how the checkpoint was trained
  std::optional<zs::DType> file_dtype;      // --weights: the dtype most of the parameters are stored in
};

Model load_model(double params, double largest, const std::string& spec, const std::string& manifest,
                 const std::string& weights) {
  const int given = (params > 0 || largest > 0) + !spec.empty() + !manifest.empty() + !weights.empty();
  if (given != 1)
    throw Usage(
        "give the model one way: --params P --largest-unit L, --model FAMILY:..., --manifest DIR or --weights PATH");
  Model m;
  if (!weights.empty()) {
    // A published model's safetensors (headers only): one unit per block (weight_unit), in first-seen order.
    const zs::WeightFiles files(weights);
    std::map<std::string, std::size_t> unit_index;
    std::map<zs::DType, int64_t> by_dtype;
    for (const zs::SafetensorsTensor& t : files.tensors()) {
      const auto [it, added] = unit_index.emplace(zs::weight_unit(t.name), m.units.size());
      if (added) m.units.emplace_back();
      m.units[it->second].push_back({t.name, zs::Shape(std::span<const int64_t>(t.shape)), true, t.shape.size() > 1});
      by_dtype[t.dtype] += t.numel();
    }
    if (m.units.empty()) throw Usage(fmt::format("--weights {}: no tensors", files.description()));
    m.file_dtype = std::max_element(by_dtype.begin(), by_dtype.end(), [](const auto& a, const auto& b) {
                     return a.second < b.second;
                   })->first;
    m.what = fmt::format("the weights {} ({} in the files; one unit per block)", files.description(),
                         zs::dtype_name(*m.file_dtype));
  } else if (params != 0 || largest != 0) {
    if (!(params > 0 && largest > 0 && largest <= params))
      throw Usage(fmt::format("--params {} and --largest-unit {} must be positive, the unit no larger than the model",
                              params, largest));
    const auto P = static_cast<int64_t>(params), L = static_cast<int64_t>(largest);
    for (int64_t at = 0; at < P; at += L) m.units.push_back({{"w", {std::min(L, P - at)}}});
    m.what = "cold model (--params, --largest-unit)";
  } else if (!spec.empty()) {
    const auto colon = spec.find(':');
    const std::string family = spec.substr(0, colon);
    if (family != "gpt") throw Usage(fmt::format("--model '{}': unknown family '{}' (known: gpt)", spec, family));
    try {
      m.shape = zs::family::parse_gpt(colon == std::string::npos ? "" : spec.substr(colon + 1));
    } catch (const zs::Error& e) {
      throw Usage(e.what());
    }
    m.gpt = true;
    for (auto& [name, tensors] : zs::family::gpt_units(m.shape)) m.units.push_back(tensors);
    m.what = fmt::format("GPT d={} L={} V={} T={} H={}", m.shape.d, m.shape.layers, m.shape.vocab, m.shape.seq,
                         m.shape.heads);
  } else {
    zs::ckpt::Reader r(manifest);
    std::string unit;
    for (const auto& t : r.manifest().tensors) {
      if (m.units.empty() || t.unit != unit) m.units.emplace_back();
      unit = t.unit;
      m.units.back().push_back({t.name, zs::Shape(std::span<const int64_t>(t.shape)), t.trainable, t.weight_decay});
    }
    const zs::ckpt::Manifest& saved = r.manifest();
    m.what = fmt::format("the model of checkpoint {} (saved at world {}, ZeRO-{}, {} {})", r.dir(), saved.world_size,
                         saved.stage, saved.optimizer, zs::dtype_name(saved.param_dtype));
    m.saved = saved;
    m.saved->tensors.clear();  // what is kept: the settings
  }
  for (const auto& u : m.units) {
    int64_t n = 0;
    for (const auto& t : u) n += t.shape.numel();
    m.params += n;
    m.largest = std::max(m.largest, n);
  }
  return m;
}

// What estimate prints: its rows (worlds x offload choices x stages) and the memory they must fit in.
struct EstimateQuery {
  std::vector<int> worlds{1}, stages{0, 1, 2, 3};
  std::vector<std::string> offloads{"none"};
  std::vector<double> ratios;               // offload.ratio for the optimizer rows
  bool cpu = false;                         // the engine's device is the CPU
  double device_bytes = 0, host_bytes = 0;  // 0: not asked
  int batch = 0;                            // the example GPT's activations with this many sequences
  bool recompute = false;                   // ... with activation checkpointing
  int ranks_per_node = 0;                   // DeepSpeed's num_gpus_per_node (0: one node)
  bool json = false;
};

int estimate(const Model& m, zs::Config cfg, const EstimateQuery& q) {
  for (int w : q.worlds)
    if (const int g = cfg.zero.hybrid_group; g > 0 && w % g != 0)
      throw Usage(fmt::format("zero.hybrid_group {} does not divide --world {} into whole groups", g, w));
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  const double act = m.gpt && q.batch > 0
                         ? static_cast<double>(zs::family::gpt_activation_bytes(
                               m.shape, q.batch, q.cpu, cfg.precision.param, cfg.precision.reduce, q.recompute))
                         : 0;
  const std::string what =
      m.what + (m.gpt && q.batch > 0 ? zs::family::gpt_fused_attention(m.shape, q.batch, q.cpu, cfg.precision.param)
                                           ? " (fused attention)"
                                           : " (plain attention)"
                                     : "");
  const double act_host =
      m.gpt && q.batch > 0 ? static_cast<double>(zs::family::gpt_activation_host_bytes(m.shape, q.batch, q.cpu)) : 0;
  auto fits_text = [&] {
    std::string out;
    if (q.device_bytes > 0) out += "device " + format_bytes(q.device_bytes);
    if (q.host_bytes > 0) out += (out.empty() ? "host " : ", host ") + format_bytes(q.host_bytes);
    return out.empty() ? "" : "fits " + out;
  };
  // offload.ratio: one row per share for the streaming optimizer offload (the others have no share to choose).
  std::vector<std::pair<std::string, double>> choices;
  for (const std::string& off : q.offloads)
    for (double r : off == "optimizer" ? q.ratios : std::vector<double>{1.0}) choices.emplace_back(off, r);
  auto label_of = [](const std::string& off, double ratio) {
    return ratio < 1.0 ? fmt::format("{} {:.3g}", off, ratio) : off;
  };
  std::size_t ow = 21;  // the offload column, wider for a longer label
  for (const auto& [off, ratio] : choices) ow = std::max(ow, label_of(off, ratio).size());
  if (!q.json) {
    fmt::print(
        "{}: {} parameters in {} units (largest {}); compute {}, gradients {}, {}; stage 3 gathers {} units (prefetch "
        "{}); per rank, bytes on the {}\n",
        what, m.params, m.units.size(), m.largest, zs::dtype_name(cfg.precision.param),
        zs::dtype_name(cfg.precision.reduce), zs::kernels::optimizer_name(cfg.optimizer.type), cfg.zero.max_live_units,
        cfg.zero.prefetch, q.cpu ? "CPU (device: cpu)" : "GPU");
    fmt::print("{:>5} {:>5} {:>{}} | {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>10} | {:>10} | {:>23} {}\n",
               "world", "stage", "offload", ow, "params", "master", "grads", "optim", "gather", "scratch", "activation",
               "device", "host", "DeepSpeed dev / host", fits_text());
  }
  std::vector<std::string> host_rows;
  for (int w : q.worlds)
    for (const auto& [off, ratio] : choices)
      for (int s : q.stages) {
        cfg.zero.stage = s;
        cfg.offload.choose(off);
        cfg.offload.ratio = ratio;
        if (!zs::offload_problem(cfg).empty()) continue;  // e.g. stage 0 with offload: not a configuration
        const std::string label = label_of(off, cfg.offload.ratio);
        const zs::MemoryPlan p = zs::plan_memory(m.units, cfg, w, 0, q.cpu);
        auto dev = [&](MemCategory c) { return static_cast<double>(p.device[static_cast<std::size_t>(c)]); };
        const double scratch = dev(MemCategory::comm_scratch) + dev(MemCategory::other);
        const double total = static_cast<double>(p.device_total()) + act,
                     host = static_cast<double>(p.host_total()) + act_host;
        // (DeepSpeed's estimators know no ratio and no NVMe.)
        const DeepSpeedFigure ds =
            cfg.offload.ratio < 1.0 || cfg.offload.state_on_nvme() || cfg.offload.params_on_nvme()
                ? DeepSpeedFigure{std::nan(""), std::nan("")}
                : deepspeed_estimate(s, cfg.offload, static_cast<double>(m.params), static_cast<double>(m.largest), w,
                                     q.ranks_per_node > 0 ? std::min(q.ranks_per_node, w) : w);
        const bool fits =
            (q.device_bytes <= 0 || total <= q.device_bytes) && (q.host_bytes <= 0 || host <= q.host_bytes);
        if (q.json) {
          nlohmann::ordered_json r{{"world", w}, {"stage", s}, {"offload", off}, {"offload_ratio", cfg.offload.ratio}};
          for (int c = 0; c < zs::kMemCategoryCount; ++c) {
            const std::string name(zs::mem_category_name(static_cast<MemCategory>(c)));
            r["bytes"][name] = p.device[static_cast<std::size_t>(c)];
            r["host_bytes"][name] = p.host[static_cast<std::size_t>(c)];
          }
          r["disk_bytes"] = p.disk;
          r["activations"] = act;
          r["host_activations"] = act_host;
          r["total"] = total;
          r["host_total"] = host;
          auto num = [](double x) { return std::isnan(x) ? nlohmann::ordered_json() : nlohmann::ordered_json(x); };
          r["deepspeed_estimate"] = num(ds.device);
          r["deepspeed_host_estimate"] = num(ds.host);
          if (q.device_bytes > 0 || q.host_bytes > 0) r["fits"] = fits;
          rows.push_back(r);
          continue;
        }
        fmt::print(
            "{:>5} {:>5} {:>{}} | {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>10} | {:>10} | {:>23} {}\n", w,
            s, label, ow, format_bytes(dev(MemCategory::params)), format_bytes(dev(MemCategory::master)),
            format_bytes(dev(MemCategory::grads)), format_bytes(dev(MemCategory::optim_state)),
            format_bytes(dev(MemCategory::gather_buffers)), format_bytes(scratch), act > 0 ? format_bytes(act) : "-",
            format_bytes(total), format_bytes(host),
            std::isnan(ds.device) ? "-" : fmt::format("{} / {}", format_bytes(ds.device), format_bytes(ds.host)),
            q.device_bytes > 0 || q.host_bytes > 0 ? (fits ? "yes" : "NO") : "");
        // The host's part by category, in a second table (rows with offload, Gloo's staging or a batch's).
        auto on_host = [&](MemCategory c) { return static_cast<double>(p.host[static_cast<std::size_t>(c)]); };
        if (host > 0)
          host_rows.push_back(fmt::format(
              "{:>5} {:>5} {:>{}} | {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} | {:>10} | {:>10}\n", w, s, label,
              ow, format_bytes(on_host(MemCategory::params)), format_bytes(on_host(MemCategory::master)),
              format_bytes(on_host(MemCategory::grads)), format_bytes(on_host(MemCategory::optim_state)),
              format_bytes(on_host(MemCategory::offload_staging) + on_host(MemCategory::checkpoint_staging)),
              format_bytes(on_host(MemCategory::comm_scratch) + on_host(MemCategory::other)),
              format_bytes(on_host(MemCategory::activations) + act_host), format_bytes(host),
              p.disk > 0 ? format_bytes(static_cast<double>(p.disk)) : "-"));
      }
  if (q.json) {
    fmt::print("{}\n", rows.dump(1));
  } else {
    if (!host_rows.empty()) {
      fmt::print(
          "host memory per rank, by category:\n{:>5} {:>5} {:>{}} | {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} "
          "{:>10} | {:>10} | {:>10}\n",
          "world", "stage", "offload", ow, "params", "master", "grads", "optim", "staging", "scratch", "activation",
          "host", "disk");
      for (const std::string& line : host_rows) fmt::print("{}", line);
    }
    fmt::print(
        "params/master/grads/optim/gather: the engine's own device buffers (padding and pools included); scratch: "
        "small\n"
        "engine tables; activation: the example trainer's, with --batch; device: their sum. host: the offloaded "
        "master,\n"
        "optimizer state, gradient shards and upload staging (one pinned pool), with --async-checkpoint the copy a\n"
        "save writes from (staging too), Gloo's staging (scratch), and with --batch on the GPU the example's pinned\n"
        "batch staging (activation); with nvme the optimizer state's host buffers (optim), with nvme-params the\n"
        "parameters' host slots (params), with nvme-grads the gradients' host slots (grads). disk: with nvme, the\n"
        "optimizer state's file, with nvme-params the parameters' file, with nvme-grads the gradients' file\n"
        "(offload.nvme_path).\n"
        "DeepSpeed: its published estimators (model states only; host per node shared by its ranks; stage 1 = stage "
        "2).\n");
  }
  return 0;
}

// What measure runs: the command as given, or with none (or only options) the example GPT beside zsmem (in
// an install's or the GPU bundle's bin/, or the build tree's examples/) for a few steps, with those options.
std::vector<std::string> measured_command(const fs::path& self, const std::vector<std::string>& command) {
  if (!command.empty() && !command[0].starts_with("-")) return command;
  fs::path trainer;
  for (const fs::path& p : {self / "gpt_train", self.parent_path() / "examples" / "gpt_train"})
    if (trainer.empty() && fs::exists(p)) trainer = p;
  if (trainer.empty())
    throw Usage("measure: give the program to run after -- (the example gpt_train is not beside zsmem)");
  std::vector<std::string> run{trainer.string()};
  run.insert(run.end(), command.begin(), command.end());
  for (const auto& [option, value] : {std::pair{"--steps", "3"}, {"--log-every", "3"}, {"--eval-every", "0"}}) {
    const bool given = std::any_of(command.begin(), command.end(), [o = std::string(option)](const std::string& a) {
      return a == o || a.starts_with(o + "=");
    });
    if (!given) run.insert(run.end(), {option, value});
  }
  return run;
}

// One shell word: single-quoted, with any single quote inside spelled '\''.
std::string shell_word(const std::string& a) {
  std::string out = "'";
  for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

int measure(int nproc, double max_error, bool json_out, const std::string& svg,
            const std::vector<std::string>& command) {
  const fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
  const std::vector<std::string> run = measured_command(self, command);
  const fs::path dir = fs::temp_directory_path() / fmt::format("zsmem_{}", getpid());
  fs::remove_all(dir);
  std::string cmd = fmt::format("ZS_MEMORY_REPORT={} {} --nproc-per-node {} --master-port 0 --", dir.string(),
                                (self / "zsrun").string(), nproc);
  for (const auto& a : run) cmd += " " + shell_word(a);
  if (!json_out) cmd += " >&2";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    fmt::print(stderr, "zsmem: the run failed ({}; its output is above); nothing to measure\n",
               rc > 0 && WIFEXITED(rc)     ? fmt::format("zsrun exited with status {}", WEXITSTATUS(rc))
               : rc > 0 && WIFSIGNALED(rc) ? fmt::format("zsrun was killed by signal {}", WTERMSIG(rc))
                                           : fmt::format("the shell could not run it: {}", rc));
    return 1;
  }
  nlohmann::json all = nlohmann::json::array();
  double worst = 0;
  for (int r = 0; r < nproc; ++r) {
    std::ifstream f(dir / fmt::format("rank-{}.json", r));
    if (!f) {
      fmt::print(stderr, "zsmem: rank {} wrote no report (did the program create a zs::Engine?)\n", r);
      return 1;
    }
    nlohmann::json j = nlohmann::json::parse(f);
    // The device's total and, where the plan puts anything there, the host's: each within max_error.
    auto error = [](double planned, double peak) { return peak > 0 ? 100.0 * (planned - peak) / peak : 0.0; };
    const double planned = j["planned_total"].get<double>(), peak = j["peak_total"].get<double>();
    const double host_planned = j["host_planned_total"].get<double>(), host_peak = j["host_peak_total"].get<double>();
    const double disk_planned = j["disk_planned"].get<double>(), disk = j["disk_allocated"].get<double>();
    const double err = error(planned, peak), host_err = error(host_planned, host_peak),
                 disk_err = error(disk_planned, disk);
    worst = std::max({worst, std::fabs(err), std::fabs(host_err), std::fabs(disk_err)});
    j["error_percent"] = err;
    j["host_error_percent"] = host_err;
    j["disk_error_percent"] = disk_err;
    if (r == 0 && !svg.empty()) {
      std::ofstream(svg) << zs::memory_timeline_svg(j);
      if (!json_out) fmt::print("wrote {}: rank 0's memory over time, by category, with the step's phases\n", svg);
    }
    j.erase("timeline");  // long; the SVG shows it
    j.erase("host_timeline");
    j.erase("marks");
    all.push_back(j);
    if (json_out) continue;
    // One table per rank: each place's categories, then its total with the prediction's error.
    const std::string head = fmt::format("rank {} of {} (ZeRO-{}, {})", r, j["world"].get<int>(), j["stage"].get<int>(),
                                         j["device"].get<std::string>());
    fmt::print("{:<25} {:>12} {:>12} {:>12} {:>8}\n", head, "predicted", "peak", "now", "error");
    for (const auto& [place, key, err_pct] :
         {std::tuple{"device", "categories", err}, std::tuple{"host", "host_categories", host_err}}) {
      const bool device = place[0] == 'd';
      if (!device && host_planned == 0 && host_peak == 0) continue;  // nothing on the host
      double now = 0;
      for (auto& [name, c] : j[key].items()) {
        now += c["current"].get<double>();
        if (c["planned"].get<int64_t>() || c["peak"].get<int64_t>())
          fmt::print("  {:<6} {:<16} {:>12} {:>12} {:>12}\n", place, name, format_bytes(c["planned"].get<double>()),
                     format_bytes(c["peak"].get<double>()), format_bytes(c["current"].get<double>()));
      }
      fmt::print("  {:<6} {:<16} {:>12} {:>12} {:>12} {:>+7.2f}%\n", place, "total",
                 format_bytes(device ? planned : host_planned), format_bytes(device ? peak : host_peak),
                 format_bytes(now), err_pct);
    }
    if (disk_planned > 0 || disk > 0)
      fmt::print("  {:<6} {:<16} {:>12} {:>12} {:>12} {:>+7.2f}%\n", "disk", "offload files",
                 format_bytes(disk_planned), format_bytes(disk), format_bytes(disk), disk_err);
    fmt::print("  process peak RSS {} (the OS's count: every page this process touched, in the ledger or not)\n",
               format_bytes(j["peak_rss"].get<double>()));
    if (j.contains("cuda_in_use"))
      fmt::print(
          "  cuda in use {} of {} (the card's, at the end: the device total, the CUDA context, library "
          "workspaces, other processes)\n",
          format_bytes(j["cuda_in_use"].get<double>()), format_bytes(j["cuda_total"].get<double>()));
  }
  fs::remove_all(dir);
  if (json_out) fmt::print("{}\n", all.dump(1));
  if (max_error > 0 && worst > max_error) {
    fmt::print(stderr, "zsmem: prediction off by {:.2f} % on some rank (limit {} %)\n", worst, max_error);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zsmem: per-rank memory of a ZeroShard run, predicted (estimate) and measured (measure)", "zsmem"};
  app.require_subcommand(1);
  double params = 0, largest = 0, max_error = 0;
  std::string device_memory = "0", host_memory = "0";
  const CLI::Validator byte_size = zs::byte_size(kGiB, "GiB");  // a bare number of GiB, or a number and a unit
  std::string spec, manifest, config_path, precision = "f32", reduce = "f32", optimizer = "adamw", states = "f32";
  EstimateQuery q;
  int max_live = 4, prefetch = 2, accumulation = 1, nproc = 1;
  bool json_out = false;
  std::vector<std::string> command;
  auto* est = app.add_subcommand("estimate", "predict per-rank bytes by category for worlds x stages");
  est->add_option("--params", params, "total parameters (with --largest-unit: DeepSpeed's cold form)");
  est->add_option("--largest-unit", largest, "parameters of the largest unit");
  est->add_option("--model", spec,
                  "a model family, e.g. gpt:d=2048,L=24,V=32000,T=1024,H=16 (attn=auto, plain or fused: the "
                  "example's attention, which changes --batch's activations; auto: fused on the GPU in bf16)");
  est->add_option("--manifest", manifest,
                  "a checkpoint: its model's tensors, and (without --config) its precision, optimizer and world");
  std::string weights;
  est->add_option("--weights", weights,
                  "a model's safetensors: one file, or Hugging Face's sharded layout (the directory or its "
                  "model.safetensors.index.json); only the headers are read, one unit per block "
                  "(model.layers.N); without --precision or --config, bf16/fp16 files mean that compute dtype");
  est->add_option("--config", config_path,
                  "engine YAML: precision, optimizer, zero.*, offload.* (the options below override it)");
  auto* world_given = est->add_option("--world", q.worlds, "ranks (one or a list; default 1, or a --manifest's)")
                          ->check(zs::positive());
  est->add_option("--stage", q.stages, "ZeRO stages")->check(CLI::Range(0, 3));
  auto* offload_given =
      est->add_option("--offload", q.offloads,
                      "none, optimizer (stages 1-3), optimizer+params (stage 3), delayed (the optimizer, delayed "
                      "mode), nvme or nvme+params (the optimizer's state on disk), optimizer+nvme-params or "
                      "nvme+nvme-params (the parameters on disk too: ZeRO-Infinity), nvme+nvme-grads, "
                      "nvme+nvme-grads+params or nvme+nvme-grads+nvme-params (the gradient shards on disk too), one "
                      "or a list; rows that are not a configuration are left out")
          ->check(zs::offload_choices());
  est->add_option("--offload-ratio", q.ratios,
                  "offload.ratio for the optimizer rows, one or a list: the share of the parameters whose optimizer "
                  "runs on the host (the last units; the rest on the device), in (0, 1]; default 1, or the --config's")
      ->check(zs::offload_ratio());
  auto* precision_given = est->add_option("--precision", precision, "compute dtype: f32, bf16, f16")
                              ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  auto* reduce_given =
      est->add_option("--reduce", reduce, "gradient dtype: f32, bf16")->check(CLI::IsMember({"f32", "bf16"}));
  auto* optimizer_given = est->add_option("--optimizer", optimizer, "adamw, adam, sgd, lion")
                              ->check(CLI::IsMember({"adamw", "adam", "sgd", "lion"}));
  auto* states_given =
      est->add_option("--states", states, "optimizer state dtype (optimizer.state_dtype): f32, or bf16 (not sgd)")
          ->check(CLI::IsMember({"f32", "bf16"}));
  auto* max_live_given =
      est->add_option("--max-live", max_live, "zero.max_live_units (stage-3 gather buffers)")->check(zs::positive());
  auto* prefetch_given =
      est->add_option("--prefetch", prefetch,
                      "zero.prefetch (stage-3 gathers issued ahead): raises --max-live to prefetch + 1 unless given")
          ->check(zs::non_negative());
  auto* accumulation_given =
      est->add_option("--accumulation", accumulation, "zero.grad_accumulation")->check(zs::positive());
  bool no_sync = false;
  est->add_flag("--no-sync", no_sync,
                "with --accumulation at stages 2-3: zero.reduce_every_micro_batch false (full gradients kept "
                "between micro-batches, FSDP's no_sync)");
  std::string accumulate;
  est->add_option("--offload-accumulate", accumulate,
                  "offload.accumulate with --accumulation: where offloaded units add their micro-batches up (host: "
                  "no gradient shard on the device; device: a shard there, copied once; auto: host unless the "
                  "gradients are on disk)")
      ->check(CLI::IsMember({"auto", "host", "device"}));
  est->add_option("--batch", q.batch, "sequences per rank: adds the example GPT's activations (CPU or CUDA layers)")
      ->check(zs::non_negative());
  est->add_flag("--checkpoint-activations", q.recompute,
                "with --batch: the example's activation checkpointing (gpt_train --checkpoint-activations)");
  est->add_flag("--cpu", q.cpu, "the engine's device is the CPU (Gloo staging counted)");
  bool async_checkpoint = false;
  est->add_flag("--async-checkpoint", async_checkpoint,
                "checkpoint.async: a host copy of each rank's checkpoint file (the first shard group's ranks)");
  est->add_option("--device-memory", device_memory,
                  "memory per device, e.g. 80 (GiB), 80GiB or 85.9GB: says whether each row fits")
      ->check(byte_size);
  est->add_option("--host-memory", host_memory,
                  "host memory per rank, e.g. 125 (GiB) or 125GiB: says whether each row's host part fits")
      ->check(byte_size);
  est->add_option("--ranks-per-node", q.ranks_per_node,
                  "ranks (GPUs) per node, for DeepSpeed's figure: its host memory per node, shared by the node's "
                  "ranks (default: the whole world on one node)")
      ->check(zs::positive());
  est->add_flag("--json", json_out, "machine-readable");
  auto* mea = app.add_subcommand("measure", "run a program under zsrun and compare each rank's ledger with the plan");
  mea->add_option("--nproc", nproc, "ranks")->check(zs::positive());
  mea->add_option("--max-error", max_error,
                  "exit 1 when a rank's total (device, host, or with nvme its files on disk) differs from the "
                  "prediction by more (%)");
  mea->add_flag("--json", json_out, "machine-readable");
  std::string svg;
  mea->add_option("--svg", svg, "draw rank 0's memory timeline (by category, with forward/backward/step) here")
      ->check(zs::output_file());
  mea->add_option("command", command,
                  "the program and its arguments (after --); none, or only options: the example gpt_train with them, "
                  "for 3 steps unless --steps says otherwise");
  if (const auto stop = zs::parse_command_line(app, argc, argv)) return *stop;
  try {
    if (*mea) return measure(nproc, max_error, json_out, svg, command);
    const Model m = load_model(params, largest, spec, manifest, weights);
    zs::Config cfg = config_path.empty() ? zs::Config{} : zs::Config::from_yaml_file(config_path);
    if (m.saved && config_path.empty()) {  // a checkpoint's own settings, unless the options below say otherwise
      cfg.precision.param = m.saved->param_dtype;
      if (const auto type = zs::kernels::optimizer_parse(m.saved->optimizer)) cfg.optimizer.type = *type;
      if (const auto it = m.saved->hyper.find("momentum"); it != m.saved->hyper.end())
        cfg.optimizer.momentum = static_cast<float>(it->second);
      if (!world_given->count()) q.worlds = {m.saved->world_size};
    }
    if (m.file_dtype && config_path.empty() && (*m.file_dtype == zs::DType::bf16 || *m.file_dtype == zs::DType::f16))
      cfg.precision.param = *m.file_dtype;  // the weights' own precision, unless the options below say otherwise
    // The options given override the config (or the defaults, which they share with zs::Config).
    if (precision_given->count()) cfg.precision.param = zs::dtype_parse(precision);
    if (reduce_given->count()) cfg.precision.reduce = zs::dtype_parse(reduce);
    if (optimizer_given->count()) {
      cfg.optimizer.type = *zs::kernels::optimizer_parse(optimizer);  // CLI11 admitted only the four names
      if (optimizer == "sgd") cfg.optimizer.momentum = 0.9f;
    }
    if (states_given->count()) cfg.optimizer.state_dtype = zs::dtype_parse(states);
    if (cfg.optimizer.type == zs::kernels::Optimizer::sgd && cfg.optimizer.state_dtype == zs::DType::bf16)
      throw Usage("--states bf16 (optimizer.state_dtype) is for adamw, adam and lion, not sgd");
    if (max_live_given->count()) cfg.zero.max_live_units = max_live;
    if (prefetch_given->count()) {
      cfg.zero.prefetch = prefetch;
      if (!max_live_given->count()) cfg.zero.max_live_units = std::max(cfg.zero.max_live_units, prefetch + 1);
    }
    if (const std::string bad = zs::live_units_problem(cfg); !bad.empty())
      throw Usage("--max-live, --prefetch: " + bad);
    if (accumulation_given->count()) cfg.zero.grad_accumulation = accumulation;
    if (no_sync) cfg.zero.reduce_every_micro_batch = false;
    if (!accumulate.empty()) cfg.offload.accumulate = accumulate;
    if (async_checkpoint) cfg.checkpoint.async = true;
    if (q.batch > 0 && !m.gpt) throw Usage("--batch needs --model gpt:... (activations are known for that family)");
    if (!offload_given->count()) q.offloads = {std::string(cfg.offload.choice())};  // the config's (none by default)
    if (q.recompute && q.batch == 0) throw Usage("--checkpoint-activations needs --batch (it changes the activations)");
    if (q.ratios.empty()) q.ratios = {cfg.offload.ratio};  // the config's (1 by default)
    q.device_bytes = *zs::parse_byte_size(device_memory, kGiB);
    q.host_bytes = *zs::parse_byte_size(host_memory, kGiB);
    q.json = json_out;
    return estimate(m, cfg, q);
  } catch (const Usage& e) {
    fmt::print(stderr, "zsmem: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "zsmem: {}\n", e.what());
    return 1;
  }
}
