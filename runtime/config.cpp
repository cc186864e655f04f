// YAML -> Config with validation: every key known, every value typed and in range, errors at line:column.
#include "runtime/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace zs {
namespace {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// A value as the user wrote it, for messages: a scalar's text, or a sequence or mapping in flow style.
std::string node_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

// One mapping of the document: reads known keys, then rejects whatever else is there.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, const std::string& source)
      : node_(node), path_(std::move(path)), source_(source) {
    if (present() && !node_.IsMap()) fail(node_, "expected a mapping of keys");
  }

  // An absent or empty section ("zero:" with nothing under it) reads as all defaults.
  bool present() const { return node_.IsDefined() && !node_.IsNull(); }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const {
    const YAML::Mark m = at.Mark();
    ZS_FAIL("{}:{}:{}: {}", source_, m.line + 1, m.column + 1, what);
  }

  std::string key_path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  template <typename T>
  void get(const char* key, T& out, std::function<bool(const T&)> valid = nullptr, const char* range = "") {
    known_.push_back(key);
    if (!present()) return;
    const YAML::Node v = node_[key];
    if (!v) return;
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail(v, fmt::format("{}: expected {}, got '{}'", key_path(key), type_name<T>(), node_text(v)));
    }
    if (valid && !valid(out)) fail(v, fmt::format("{} must be {}, got {}", key_path(key), range, node_text(v)));
  }

  // A string restricted to `choices`; `hint` ends the error (what a user coming from elsewhere meant).
  void choice(const char* key, std::string& out, std::vector<std::string> choices, const char* hint = "") {
    get<std::string>(key, out);
    if (std::find(choices.begin(), choices.end(), out) == choices.end())
      fail(node_[key],
           fmt::format("{} must be one of {}, got '{}'{}", key_path(key), fmt::join(choices, ", "), out, hint));
  }

  Section sub(const char* key) {
    known_.push_back(key);
    return Section(present() ? node_[key] : YAML::Node(YAML::NodeType::Undefined), key_path(key), source_);
  }

  const YAML::Node& node() const { return node_; }
  void note_known(const char* key) { known_.push_back(key); }

  // Every key present must have been asked for.
  void finish() const {
    if (!present()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (!it->first.IsScalar())
        fail(it->first, fmt::format("a key in {} must be a plain name, not a {}",
                                    path_.empty() ? "the top level" : "'" + path_ + "'",
                                    it->first.IsMap() ? "mapping" : "sequence"));
      const std::string k = it->first.as<std::string>();
      if (std::find(known_.begin(), known_.end(), k) != known_.end()) continue;
      std::string best;
      std::size_t best_d = 1000;
      for (const auto& c : known_)
        if (std::size_t d = edit_distance(k, c); d < best_d) best_d = d, best = c;
      fail(it->first, fmt::format("unknown key '{}' in {}{}", k, path_.empty() ? "the top level" : "'" + path_ + "'",
                                  best_d <= std::max<std::size_t>(2, k.size() / 3)
                                      ? "; did you mean '" + best + "'?"
                                      : "; valid keys: " + fmt::format("{}", fmt::join(known_, ", "))));
    }
  }

 private:
  template <typename T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>)
      return "true or false";
    else if constexpr (std::is_integral_v<T>)
      return "an integer";
    else if constexpr (std::is_floating_point_v<T>)
      return "a number";
    else
      return "a string";
  }

  YAML::Node node_;
  std::string path_;
  const std::string& source_;
  std::vector<std::string> known_;
};

DType read_dtype(Section& s, const char* key, DType def, std::vector<std::string> allowed) {
  std::string v(dtype_name(def));
  if (v == "f32") v = "fp32";
  if (v == "f16") v = "fp16";
  s.get<std::string>(key, v);
  for (const auto& a : allowed)
    if (v == a || (a == "fp32" && (v == "f32" || v == "float32")) || (a == "fp16" && (v == "f16" || v == "float16")) ||
        (a == "bf16" && v == "bfloat16"))
      return dtype_parse(a);
  s.fail(s.node()[key], fmt::format("{} must be one of {}, got '{}'", s.key_path(key), fmt::join(allowed, ", "), v));
}

template <typename T>
auto at_least(T lo) {
  return std::function<bool(const T&)>([lo](const T& v) { return v >= lo; });
}
template <typename T>
auto between(T lo, T hi) {
  return std::function<bool(const T&)>([lo, hi](const T& v) { return v >= lo && v <= hi; });
}

}  // namespace

namespace {

Config parse_config(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    ZS_FAIL("{}:{}:{}: not valid YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  Config c;
  Section top(root, "", source);

  Section z = top.sub("zero");
  z.get<int>("stage", c.zero.stage, between(0, 3), "0, 1, 2 or 3");
  z.get<int>("prefetch", c.zero.prefetch, between(0, 64), "between 0 and 64");
  z.get<int>("max_live_units", c.zero.max_live_units, between(1, 1024), "between 1 and 1024");
  z.get<bool>("reshard_after_forward", c.zero.reshard_after_forward);
  z.get<int>("hybrid_group", c.zero.hybrid_group, at_least(0), ">= 0");
  z.get<int>("grad_accumulation", c.zero.grad_accumulation, between(1, 1 << 20), ">= 1");
  z.get<bool>("reduce_every_micro_batch", c.zero.reduce_every_micro_batch);
  z.finish();
  if (const std::string bad = live_units_problem(c); !bad.empty()) top.fail(root["zero"], bad);

  Section p = top.sub("precision");
  c.precision.param = read_dtype(p, "param", c.precision.param, {"fp32", "bf16", "fp16"});
  c.precision.reduce = read_dtype(p, "reduce", c.precision.reduce, {"fp32", "bf16"});
  c.precision.master = read_dtype(p, "master", c.precision.master, {"fp32"});
  // loss_scale: none, dynamic, or a fixed scale as a number (DeepSpeed's fp16.loss_scale, whose 0 is dynamic).
  std::string scale =
      c.precision.loss_scale == "fixed" ? fmt::format("{}", c.precision.fixed_loss_scale) : c.precision.loss_scale;
  p.get<std::string>("loss_scale", scale);
  if (scale == "none" || scale == "dynamic") {
    c.precision.loss_scale = scale;
  } else {
    char* end = nullptr;
    const double v = std::strtod(scale.c_str(), &end);
    if (end == scale.c_str() || *end != '\0' || !(v > 0) || !std::isfinite(v))
      p.fail(
          p.node()["loss_scale"],
          fmt::format(
              "precision.loss_scale must be none, dynamic or a fixed scale > 0, got '{}'{}", scale,
              end != scale.c_str() && *end == '\0' && v == 0 ? " (DeepSpeed's loss_scale: 0 is 'dynamic' here)" : ""));
    c.precision.loss_scale = "fixed";
    c.precision.fixed_loss_scale = v;
  }
  p.get<int>("initial_scale_power", c.precision.initial_scale_power, between(0, 64), "between 0 and 64");
  p.get<int64_t>("loss_scale_window", c.precision.loss_scale_window, at_least<int64_t>(1), ">= 1");
  p.get<int>("hysteresis", c.precision.hysteresis, at_least(1), ">= 1");
  p.get<double>("min_loss_scale", c.precision.min_loss_scale,
                std::function<bool(const double&)>([](const double& v) { return v > 0; }), "> 0");
  p.finish();

  Section o = top.sub("optimizer");
  std::string type = "adamw";
  o.choice("type", type, {"adamw", "adam", "sgd", "lion"});
  c.optimizer.type = *kernels::optimizer_parse(type);  // choice() admitted only the four names
  o.get<float>("lr", c.optimizer.lr, std::function<bool(const float&)>([](const float& v) { return v > 0; }), "> 0");
  std::vector<float> betas = {c.optimizer.beta1, c.optimizer.beta2};
  o.get<std::vector<float>>("betas", betas,
                            std::function<bool(const std::vector<float>&)>([](const std::vector<float>& b) {
                              return b.size() == 2 && b[0] >= 0 && b[0] < 1 && b[1] >= 0 && b[1] < 1;
                            }),
                            "two numbers in [0, 1)");
  c.optimizer.beta1 = betas[0];
  c.optimizer.beta2 = betas[1];
  o.get<float>("eps", c.optimizer.eps, std::function<bool(const float&)>([](const float& v) { return v > 0; }), "> 0");
  o.get<float>("weight_decay", c.optimizer.weight_decay, at_least(0.0f), ">= 0");
  o.get<float>("clip_grad_norm", c.optimizer.clip_grad_norm, at_least(0.0f), ">= 0 (0 turns clipping off)");
  o.get<float>("momentum", c.optimizer.momentum, between(0.0f, 1.0f), "in [0, 1]");
  o.get<float>("dampening", c.optimizer.dampening, between(0.0f, 1.0f), "in [0, 1]");
  o.get<bool>("nesterov", c.optimizer.nesterov);
  c.optimizer.state_dtype = read_dtype(o, "state_dtype", c.optimizer.state_dtype, {"fp32", "bf16"});
  if (c.optimizer.state_dtype != DType::f32 && c.optimizer.type == kernels::Optimizer::sgd)
    o.fail(o.node()["state_dtype"],
           "optimizer.state_dtype: bf16 is for adamw, adam and lion; SGD keeps its momentum "
           "in fp32 (remove state_dtype or set it to fp32)");
  o.finish();

  Section s = top.sub("schedule");
  std::string kind = "constant";
  s.choice("type", kind, {"constant", "cosine", "linear"});
  c.schedule.kind = kind == "cosine"   ? ScheduleKind::cosine
                    : kind == "linear" ? ScheduleKind::linear
                                       : ScheduleKind::constant;
  s.get<int64_t>("warmup_steps", c.schedule.warmup_steps, at_least<int64_t>(0), ">= 0");
  s.get<int64_t>("total_steps", c.schedule.total_steps, at_least<int64_t>(0), ">= 0");
  s.get<double>("min_lr_ratio", c.schedule.min_lr_ratio, between(0.0, 1.0), "in [0, 1]");
  s.finish();
  if (c.schedule.kind != ScheduleKind::constant && c.schedule.total_steps <= c.schedule.warmup_steps)
    top.fail(root["schedule"], fmt::format("schedule.total_steps ({}) must exceed warmup_steps ({}) for a {} decay",
                                           c.schedule.total_steps, c.schedule.warmup_steps, kind));

  Section off = top.sub("offload");
  off.choice("optimizer", c.offload.optimizer, {"none", "cpu", "nvme"});
  off.choice("params", c.offload.params, {"none", "cpu", "nvme"});
  off.choice("grads", c.offload.grads, {"cpu", "nvme"});
  off.choice("accumulate", c.offload.accumulate, {"auto", "host", "device"});
  off.get<bool>("pin_memory", c.offload.pin_memory);
  off.choice("mode", c.offload.mode, {"streaming", "delayed"});
  off.get<double>("ratio", c.offload.ratio, Config::Offload::ratio_valid, "in (0, 1]");
  off.get<std::string>("nvme_path", c.offload.nvme_path);
  off.get<int>("buffer_count", c.offload.buffer_count, at_least(2), ">= 2");
  off.get<int>("param_buffer_count", c.offload.param_buffer_count, at_least(2), ">= 2");
  off.get<int>("grad_buffer_count", c.offload.grad_buffer_count, at_least(2), ">= 2");
  off.finish();
  if (const std::string bad = offload_problem(c); !bad.empty()) top.fail(root["offload"], bad);
  if ((c.offload.state_on_nvme() || c.offload.params_on_nvme()) && c.offload.nvme_path.empty())
    top.fail(root["offload"], fmt::format("offload.{}: nvme needs offload.nvme_path: a directory on a fast local disk",
                                          c.offload.state_on_nvme() ? "optimizer" : "params"));

  Section cm = top.sub("comm");
  cm.choice("backend", c.comm.backend, {"auto", "gloo", "nccl"});
  cm.get<double>("timeout_s", c.comm.timeout_s,
                 std::function<bool(const double&)>([](const double& v) { return v > 0; }), "> 0");
  cm.finish();

  top.choice("device", c.device, {"auto", "cpu", "cuda"});

  Section ck = top.sub("checkpoint");
  ck.get<std::string>("dir", c.checkpoint.dir);
  ck.get<int64_t>("every_steps", c.checkpoint.every_steps, at_least<int64_t>(0), ">= 0");
  ck.get<int>("keep", c.checkpoint.keep, at_least(1), ">= 1");
  ck.get<bool>("async", c.checkpoint.async);
  ck.finish();

  Section dbg = top.sub("debug");
  dbg.get<bool>("check_collectives", c.debug.check_collectives);
  dbg.finish();

  top.finish();
  return c;
}

}  // namespace

void Config::Offload::choose(std::string_view choice) {
  ZS_CHECK(std::find(std::begin(kChoices), std::end(kChoices), choice) != std::end(kChoices),
           "offload '{}': expected none, optimizer, optimizer+params, delayed, nvme, nvme+params, "
           "optimizer+nvme-params, nvme+nvme-params, nvme+nvme-grads, nvme+nvme-grads+params or "
           "nvme+nvme-grads+nvme-params",
           choice);
  optimizer = choice == "none" ? "none" : choice.starts_with("nvme") ? "nvme" : "cpu";
  params = choice.ends_with("+nvme-params") ? "nvme" : choice.ends_with("+params") ? "cpu" : "none";
  grads = choice.find("+nvme-grads") != std::string_view::npos ? "nvme" : "cpu";
  mode = choice == "delayed" ? "delayed" : "streaming";
  if (choice != "optimizer") ratio = 1.0;  // a share of the optimizer on the host is the streaming offload's only
}

std::string_view Config::Offload::choice() const {
  if (!optimizer_on_cpu()) return "none";
  if (grads_on_nvme())
    return params_on_nvme()     ? "nvme+nvme-grads+nvme-params"
           : params_offloaded() ? "nvme+nvme-grads+params"
                                : "nvme+nvme-grads";
  if (params_on_nvme()) return state_on_nvme() ? "nvme+nvme-params" : "optimizer+nvme-params";
  if (state_on_nvme()) return params_offloaded() ? "nvme+params" : "nvme";
  if (params_offloaded()) return "optimizer+params";
  return delayed() ? "delayed" : "optimizer";
}

std::string live_units_problem(const Config& c) {
  if (c.zero.max_live_units >= c.zero.prefetch + 1) return {};
  return fmt::format(
      "zero.max_live_units ({}) must be at least prefetch + 1 ({}): the unit in use and the prefetched "
      "ones are live together",
      c.zero.max_live_units, c.zero.prefetch + 1);
}

std::string offload_problem(const Config& c) {
  // What DeepSpeed users expect: optimizer offload from stage 1, parameter offload at stage 3 on top of it.
  if (c.offload.optimizer_on_cpu() && c.zero.stage == 0)
    return fmt::format(
        "offload.optimizer: {} needs zero.stage 1, 2 or 3 (stage 0 keeps a full optimizer replica on every rank; "
        "shard it first)",
        c.offload.optimizer);
  const std::string& params = c.offload.params;
  if (c.offload.params_offloaded() && (c.zero.stage != 3 || !c.offload.optimizer_on_cpu()))
    return fmt::format(
        "offload.params: {} needs zero.stage: 3 and offload.optimizer: cpu or nvme (the parameter shards are the "
        "optimizer's output, kept where the optimizer runs)",
        params);
  if (c.offload.params_offloaded() && c.offload.mode == "delayed")
    return fmt::format(
        "offload.mode: delayed works with offload.optimizer only; with offload.params: {} use mode: streaming", params);
  if (c.offload.params_on_nvme() && c.precision.param == DType::f32 && !c.offload.state_on_nvme())
    return "offload.params: nvme with precision.param: fp32 and offload.optimizer: cpu has nothing to move: the "
           "parameters are the f32 master, which the CPU step keeps in host memory; use offload.params: cpu, "
           "precision.param: bf16, or offload.optimizer: nvme";
  if (c.offload.grads_on_nvme() && (!c.offload.state_on_nvme() || c.offload.delayed()))
    return "offload.grads: nvme needs offload.optimizer: nvme and mode: streaming (the gradient shards go to disk "
           "when the optimizer's state is there; each is read back for its update, in the step)";
  if (c.offload.grads_on_nvme() && c.offload.accumulate == "host")
    return "offload.accumulate: host with offload.grads: nvme would read and write each gradient shard on disk "
           "every micro-batch; use accumulate: device or auto (the sum is made on the device and written once)";
  if (!Config::Offload::ratio_valid(c.offload.ratio))
    return fmt::format("offload.ratio {} is not in (0, 1]: it is the share of the optimizer kept on the host",
                       c.offload.ratio);
  if (c.offload.ratio < 1.0 && !c.offload.optimizer_on_cpu())
    return "offload.ratio below 1 needs offload.optimizer: cpu or nvme (it is the share of the optimizer on the "
           "host)";
  if (c.offload.ratio < 1.0 && c.offload.params_offloaded())
    return "offload.ratio below 1 keeps some units' optimizer, and so their parameters, on the device: use it with "
           "offload.params: none";
  if (c.offload.ratio < 1.0 && c.offload.mode == "delayed")
    return "offload.ratio below 1 works with offload.mode: streaming (a delayed update on the host beside a current "
           "one on the device would mix parameters of two steps)";
  return "";
}

Config Config::from_yaml(const std::string& text, const std::string& source) {
  // Every yaml-cpp exception parse_config's checks did not anticipate still becomes a located zs::Error.
  try {
    return parse_config(text, source);
  } catch (const YAML::Exception& e) {
    ZS_FAIL("{}:{}:{}: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

Config Config::from_yaml_file(const std::string& path) {
  std::ifstream f(path);
  ZS_CHECK(f.good(), "cannot read the config file '{}': {}", path, detail::sys_error_string(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return from_yaml(ss.str(), path);
}

std::string Config::job_path() {
  const char* path = std::getenv("ZS_CONFIG");
  return path ? path : "";
}

Config Config::from_job(const Config& otherwise) {
  const std::string path = job_path();
  return path.empty() ? otherwise : from_yaml_file(path);
}

}  // namespace zs
