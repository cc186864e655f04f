// The engine test harness: the test model's app (training through an Engine, on CPU or CUDA) and the
// single-process reference trainer, shared by the dist tests and the GPU tests.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <type_traits>

#include <fmt/format.h>

#include <gtest/gtest.h>

#include "core/buffer.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "optim/schedule.h"
#include "runtime/engine.h"
#include "tests/dist/test_model.h"

namespace zs::test {

constexpr int kSteps = 50;
inline const auto kInit = init::normal(0.3f, 1337);

struct Case {
  int stage;
  DType param;
  int prefetch;
  int accum;
  float clip;
  kernels::Optimizer opt = kernels::Optimizer::adamw;
  bool cosine = false;       // warm-up 5 steps, then cosine decay to 10 % at step 30 (then flat)
  int offload = 0;           // 0: none, 1: the optimizer on the CPU, 2: the optimizer and the parameters
  bool delayed = false;      // offload.mode: delayed (the step computes with parameters two updates old)
  bool bf16_states = false;  // optimizer.state_dtype: bf16
  bool no_sync = false;      // zero.reduce_every_micro_batch: false (full gradients until the last micro-batch)
};

inline Config make_config(const Case& c) {
  Config cfg;
  cfg.zero.stage = c.stage;
  cfg.zero.prefetch = c.prefetch;
  cfg.zero.max_live_units = c.prefetch + 1;
  cfg.zero.grad_accumulation = c.accum;
  cfg.precision.param = c.param;
  cfg.optimizer.type = c.opt;
  cfg.optimizer.lr = 3e-3f;
  cfg.optimizer.beta2 = 0.999f;
  cfg.optimizer.weight_decay = 0.1f;
  cfg.optimizer.clip_grad_norm = c.clip;
  cfg.optimizer.momentum = 0.9f;
  cfg.optimizer.dampening = 0.1f;
  cfg.optimizer.nesterov = true;
  if (c.opt == kernels::Optimizer::lion) cfg.optimizer.lr = 5e-4f;
  if (c.opt == kernels::Optimizer::sgd) cfg.optimizer.lr = 0.1f;
  if (c.cosine) cfg.schedule = Schedule{ScheduleKind::cosine, 5, 30, 0.1};
  if (c.offload >= 1) cfg.offload.optimizer = "cpu";
  if (c.offload >= 2) cfg.offload.params = "cpu";
  if (c.delayed) cfg.offload.mode = "delayed";
  if (c.bf16_states) cfg.optimizer.state_dtype = DType::bf16;
  cfg.zero.reduce_every_micro_batch = !c.no_sync;
  return cfg;
}

// A directory of this process's own for the files of offload.*: nvme, removed at exit.
inline const std::string& nvme_dir() {
  struct Dir {
    Dir() : path(std::filesystem::temp_directory_path() / fmt::format("zs_nvme_{}", ::getpid())) {
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
    std::string path;
  };
  static const Dir dir;
  return dir.path;
}

// cfg with the optimizer's state on disk (offload.optimizer: nvme) through `buffers` host buffers (2: fewer
// than the test model's 4 units, so every unit's state goes to the disk and back every step).
inline Config on_nvme(Config cfg, int buffers = 2) {
  cfg.offload.optimizer = "nvme";
  cfg.offload.nvme_path = nvme_dir();
  cfg.offload.buffer_count = buffers;
  return cfg;
}

// cfg (stage 3, the optimizer offloaded) with the parameters on disk too (offload.params: nvme), cached in
// `slots` host slots (2: fewer than the model's 4 units, so shards go to the disk and back every step).
inline Config params_on_nvme(Config cfg, int slots = 2) {
  cfg.offload.params = "nvme";
  cfg.offload.nvme_path = nvme_dir();
  cfg.offload.param_buffer_count = slots;
  return cfg;
}

// cfg (the optimizer's state on disk) with the offloaded units' gradient shards on disk too (offload.grads:
// nvme), through `slots` host slots (2: fewer than the model's 4 units, so shards go to the disk and back).
inline Config grads_on_nvme(Config cfg, int slots = 2) {
  cfg.offload.grads = "nvme";
  cfg.offload.grad_buffer_count = slots;
  return cfg;
}

struct Trajectory {
  double moved = 0;            // RMS change of all parameters over the run, relative to their initial RMS
  std::vector<double> losses;  // mean training loss per step
  std::vector<std::vector<std::vector<double>>> params;  // final [unit][tensor][element]
};

// The reference: the whole global batch in one process, no sharding. f32 runs: the app's model code and
// gradient accumulation order, and the optimizer kernel (verified against f64 per step in the kernel
// tests) on whole tensors. bf16 runs: the model in f64 and the update in f64, stored in f32.
template <typename T>
inline Trajectory reference(const Case& c) {
  const Config cfg = make_config(c);
  test::Model<T> m;
  auto units = test::model_units();
  m.p.resize(units.size());
  std::vector<std::vector<std::vector<double>>> mom(units.size()), vel(units.size());
  for (std::size_t u = 0; u < units.size(); ++u)
    for (const auto& t : units[u].second) {
      std::vector<T> v(static_cast<std::size_t>(t.shape.numel()));
      for (std::size_t e = 0; e < v.size(); ++e) v[e] = kInit.value(units[u].first + "." + t.name, e);
      m.p[u].push_back(v);
      mom[u].push_back(std::vector<double>(v.size(), 0.0));
      vel[u].push_back(std::vector<double>(v.size(), 0.0));
    }
  std::vector<std::vector<std::vector<double>>> masters(units.size());  // f64 master weights
  for (std::size_t u = 0; u < units.size(); ++u)
    for (auto& t : m.p[u]) masters[u].emplace_back(t.begin(), t.end());
  Trajectory run;
  std::vector<std::vector<std::vector<double>>> grad(units.size());
  std::vector<std::vector<std::vector<T>>> lagged = m.p;  // delayed mode: the parameters one update back
  for (int k = 0; k < kSteps; ++k) {
    if (c.delayed) {  // step k computes with the parameters after update k-2 (the last one still running)
      auto current = m.p;
      if (k > 0) m.p = lagged;
      lagged = std::move(current);
    }
    // Gradients accumulate in T exactly as the app does on one rank: per sample, scaled by 1/batch, in
    // sample order; micro-batches added up in T; the engine's 1/accumulation comes with the update.
    std::vector<std::vector<std::vector<T>>> acc(units.size());
    for (std::size_t u = 0; u < units.size(); ++u)
      for (auto& t : m.p[u]) acc[u].push_back(std::vector<T>(t.size(), T(0)));
    double loss = 0;
    for (int mb = 0; mb < c.accum; ++mb) {
      m.g = m.p;
      for (auto& u : m.g)
        for (auto& t : u) std::fill(t.begin(), t.end(), T(0));
      for (int s = 0; s < test::kGlobalBatch; ++s) {
        const int64_t sample = (static_cast<int64_t>(k) * c.accum + mb) * test::kGlobalBatch + s;
        typename test::Model<T>::Cache cache;
        cache.x.resize(test::kIn);
        for (int j = 0; j < test::kIn; ++j) cache.x[static_cast<std::size_t>(j)] = test::input_value(sample, j);
        for (int u = 0; u < 4; ++u) m.forward_unit(u, cache);
        loss += static_cast<double>(test::Model<T>::loss(cache, test::label(sample))) / (test::kGlobalBatch * c.accum);
        std::vector<T> d;
        for (int u = 3; u >= 0; --u)
          d = m.backward_unit(u, cache, d, test::label(sample), T(1) / T(test::kGlobalBatch));
      }
      for (std::size_t u = 0; u < units.size(); ++u)
        for (std::size_t t = 0; t < acc[u].size(); ++t)
          for (std::size_t e = 0; e < acc[u][t].size(); ++e) acc[u][t][e] += m.g[u][t][e];
    }
    for (std::size_t u = 0; u < units.size(); ++u) {
      grad[u].clear();
      for (auto& t : acc[u]) {
        grad[u].emplace_back(t.begin(), t.end());
        for (double& x : grad[u].back()) x /= c.accum;
      }
    }
    run.losses.push_back(loss);
    double sq = 0;
    for (auto& u : grad)
      for (auto& t : u)
        for (double x : t) sq += x * x;
    const double norm = std::sqrt(sq);
    const double clip = c.clip > 0 ? std::min(1.0, c.clip / (norm + 1e-6)) : 1.0;
    const double t = k + 1, lr = cfg.schedule.lr(cfg.optimizer.lr, k + 1), b1 = cfg.optimizer.beta1,
                 b2 = cfg.optimizer.beta2;
    if constexpr (std::is_same_v<T, float>) {
      // f32 runs: the update is the optimizer kernel itself (checked against f64 per step in the kernel
      // tests) on whole, unsharded tensors, so this comparison isolates sharding and communication.
      kernels::OptimizerHyper h;
      h.kind = c.opt;
      h.lr = static_cast<float>(lr);
      h.beta1 = c.opt == kernels::Optimizer::sgd ? cfg.optimizer.momentum : cfg.optimizer.beta1;
      h.beta2 = cfg.optimizer.beta2;
      h.eps = cfg.optimizer.eps;
      h.dampening = cfg.optimizer.dampening;
      h.nesterov = cfg.optimizer.nesterov;
      h.step = k + 1;
      for (std::size_t u = 0; u < units.size(); ++u)
        for (std::size_t ti = 0; ti < units[u].second.size(); ++ti) {
          h.weight_decay = units[u].second[ti].weight_decay ? cfg.optimizer.weight_decay : 0.0f;
          std::vector<float> p32(masters[u][ti].begin(), masters[u][ti].end());
          std::vector<float> m32(mom[u][ti].begin(), mom[u][ti].end()), v32(vel[u][ti].begin(), vel[u][ti].end());
          // bf16 states: the kernel reads and writes them in bf16 (mom and vel hold bf16 values exactly).
          std::vector<uint16_t> m16(m32.size()), v16(v32.size());
          const DType sd = cfg.optimizer.state_dtype;
          for (std::size_t e = 0; sd == DType::bf16 && e < m32.size(); ++e) {
            m16[e] = f32_to_bf16_bits(m32[e]);
            v16[e] = f32_to_bf16_bits(v32[e]);
          }
          const auto& g32 = acc[u][ti];
          kernels::UpdateArgs a;
          a.n = static_cast<int64_t>(p32.size());
          a.param = p32.data();
          a.grad = g32.data();
          a.grad_scale = static_cast<float>(clip / c.accum);
          const bool two = c.opt == kernels::Optimizer::adamw || c.opt == kernels::Optimizer::adam;
          a.state1 = sd == DType::bf16 ? static_cast<void*>(m16.data()) : m32.data();
          a.state2 = !two ? nullptr : sd == DType::bf16 ? static_cast<void*>(v16.data()) : v32.data();
          a.state_dtype = sd;
          kernels::optimizer_update(Device::cpu(), h, a);
          for (std::size_t e = 0; sd == DType::bf16 && e < m32.size(); ++e) {
            m32[e] = bf16_bits_to_f32(m16[e]);
            v32[e] = bf16_bits_to_f32(v16[e]);
          }
          masters[u][ti].assign(p32.begin(), p32.end());
          mom[u][ti].assign(m32.begin(), m32.end());
          vel[u][ti].assign(v32.begin(), v32.end());
          for (std::size_t e = 0; e < p32.size(); ++e) m.p[u][ti][e] = p32[e];
        }
      continue;
    }
    for (std::size_t u = 0; u < units.size(); ++u)
      for (std::size_t ti = 0; ti < units[u].second.size(); ++ti) {
        const double wd = units[u].second[ti].weight_decay ? cfg.optimizer.weight_decay : 0.0;
        for (std::size_t e = 0; e < m.p[u][ti].size(); ++e) {
          double p = static_cast<double>(masters[u][ti][e]);
          double g = grad[u][ti][e] * clip;
          double& mm = mom[u][ti][e];
          double& vv = vel[u][ti][e];
          switch (c.opt) {
            case kernels::Optimizer::adamw:
            case kernels::Optimizer::adam:
              p *= 1 - lr * wd;
              mm = b1 * mm + (1 - b1) * g;
              vv = b2 * vv + (1 - b2) * g * g;
              p -= lr / (1 - std::pow(b1, t)) * mm /
                   (std::sqrt(vv) / std::sqrt(1 - std::pow(b2, t)) + cfg.optimizer.eps);
              break;
            case kernels::Optimizer::sgd: {  // L2 decay, momentum with dampening, Nesterov (PyTorch's SGD)
              const double mom_c = cfg.optimizer.momentum;
              g += wd * p;
              mm = k == 0 ? g : mom_c * mm + (1 - cfg.optimizer.dampening) * g;
              p -= lr * (cfg.optimizer.nesterov ? g + mom_c * mm : mm);
              break;
            }
            case kernels::Optimizer::lion: {
              const double cu = b1 * mm + (1 - b1) * g;
              p = p * (1 - lr * wd) - lr * ((cu > 0) - (cu < 0));
              mm = b2 * mm + (1 - b2) * g;
              break;
            }
          }
          // Stored as the engine stores them: f32 master, m and v in f32 or bf16 (each update computed in f64).
          auto stored = [&](double x) {
            const auto f = static_cast<float>(x);
            return c.bf16_states ? static_cast<double>(bf16_bits_to_f32(f32_to_bf16_bits(f))) : static_cast<double>(f);
          };
          p = static_cast<float>(p);
          mm = stored(mm);
          vv = stored(vv);
          masters[u][ti][e] = p;
          m.p[u][ti][e] = static_cast<T>(p);
        }
      }
  }
  double d2 = 0, p2 = 0;
  for (std::size_t u = 0; u < units.size(); ++u)
    for (std::size_t ti = 0; ti < units[u].second.size(); ++ti)
      for (std::size_t e = 0; e < masters[u][ti].size(); ++e) {
        const double p0 = kInit.value(units[u].first + "." + units[u].second[ti].name, e);
        d2 += (masters[u][ti][e] - p0) * (masters[u][ti][e] - p0);
        p2 += p0 * p0;
      }
  run.moved = std::sqrt(d2 / p2);
  run.params = masters;
  return run;
}

// Called with each unit's gradient views after the app wrote them (step counts from 0 over the engine's
// life): lets a test corrupt one, or fail at a chosen step.
using Tamper = std::function<void(int step, int unit, int tensor, TensorView grad)>;

// The app: this rank's slice of each micro-batch, through the engine.
inline Trajectory train(const Case& c, Engine& engine, int steps = kSteps, const Tamper& tamper = nullptr,
                        std::vector<StepStats>* stats = nullptr) {
  Comm& comm = engine.comm();
  const int local = test::kGlobalBatch / comm.size();
  auto units = test::model_units();
  std::vector<UnitId> ids = {0, 1, 2, 3};
  if (engine.num_units() == 0) {  // first call: declare the model (later calls go on training it)
    for (auto& [name, tensors] : units) engine.add_unit(name, tensors);
    engine.init_params(kInit);
  }
  test::Model<float> m;
  m.p.resize(units.size());
  m.g.resize(units.size());
  // The app computes on the host; parameters and gradients travel through host copies, so the same
  // app runs against a CPU or a CUDA engine.
  auto load = [&](int u, const GatheredParams& h) {
    engine.compute_stream().synchronize();  // the gather is complete on the engine's stream, not the host's
    m.p[static_cast<std::size_t>(u)].clear();
    for (std::size_t t = 0; t < units[static_cast<std::size_t>(u)].second.size(); ++t) {
      TensorView v = h.tensor(static_cast<int>(t));
      std::vector<uint8_t> raw(v.bytes());
      memory_copy(raw.data(), Device::cpu(), v.data, v.device, raw.size());
      std::vector<float> x(static_cast<std::size_t>(v.numel()));
      for (std::size_t e = 0; e < x.size(); ++e) x[e] = load_as_f32(raw.data(), v.dtype, e);
      m.p[static_cast<std::size_t>(u)].push_back(std::move(x));
    }
  };
  Trajectory run;
  const int first = static_cast<int>(engine.steps_done());  // a resumed engine goes on with the data where it was
  for (int k = first; k < first + steps; ++k) {
    double loss = 0;
    for (int mb = 0; mb < c.accum; ++mb) {
      std::vector<test::Model<float>::Cache> caches(static_cast<std::size_t>(local));
      std::vector<int> labels(static_cast<std::size_t>(local));
      for (int s = 0; s < local; ++s) {
        const int64_t sample = (static_cast<int64_t>(k) * c.accum + mb) * test::kGlobalBatch + comm.rank() * local + s;
        caches[static_cast<std::size_t>(s)].x.resize(test::kIn);
        for (int j = 0; j < test::kIn; ++j)
          caches[static_cast<std::size_t>(s)].x[static_cast<std::size_t>(j)] = test::input_value(sample, j);
        labels[static_cast<std::size_t>(s)] = test::label(sample);
      }
      for (int u = 0; u < 4; ++u) {
        GatheredParams h = engine.gather(ids[static_cast<std::size_t>(u)]);
        load(u, h);
        for (auto& cache : caches) m.forward_unit(u, cache);
      }
      for (int s = 0; s < local; ++s)
        loss += test::Model<float>::loss(caches[static_cast<std::size_t>(s)], labels[static_cast<std::size_t>(s)]) /
                (local * c.accum);
      std::vector<std::vector<float>> d(static_cast<std::size_t>(local));
      for (int u = 3; u >= 0; --u) {
        GatheredParams h = engine.gather(ids[static_cast<std::size_t>(u)]);
        load(u, h);
        m.g[static_cast<std::size_t>(u)] = m.p[static_cast<std::size_t>(u)];
        for (auto& t : m.g[static_cast<std::size_t>(u)]) std::fill(t.begin(), t.end(), 0.0f);
        for (int s = 0; s < local; ++s)
          d[static_cast<std::size_t>(s)] =
              m.backward_unit(u, caches[static_cast<std::size_t>(s)], d[static_cast<std::size_t>(s)],
                              labels[static_cast<std::size_t>(s)], 1.0f / local);
        for (std::size_t t = 0; t < m.g[static_cast<std::size_t>(u)].size(); ++t) {
          TensorView dev = engine.grads(ids[static_cast<std::size_t>(u)], static_cast<int>(t));
          engine.compute_stream().synchronize();  // a fresh gradient buffer is zeroed on the engine's stream
          std::vector<uint8_t> raw(dev.bytes());
          memory_copy(raw.data(), Device::cpu(), dev.data, dev.device, raw.size());
          TensorView gv{raw.data(), dev.dtype, dev.shape, Device::cpu()};
          const auto& src = m.g[static_cast<std::size_t>(u)][t];
          const float ls = static_cast<float>(engine.loss_scale());  // as if the loss had been scaled
          for (std::size_t e = 0; e < src.size(); ++e)
            store_from_f32(gv.data, gv.dtype, e, load_as_f32(gv.data, gv.dtype, e) + src[e] * ls);
          if (tamper) tamper(k, u, static_cast<int>(t), gv);
          memory_copy(dev.data, dev.device, raw.data(), Device::cpu(), raw.size());
        }
        engine.reduce_grads(ids[static_cast<std::size_t>(u)]);
      }
    }
    run.losses.push_back(comm.all_reduce_value(static_cast<float>(loss), ReduceOp::avg));
    StepStats st = engine.step();
    if (stats) stats->push_back(st);
  }
  engine.synchronize();  // between steps, like a checkpoint; later calls go on training
  for (std::size_t u = 0; u < units.size(); ++u) {
    run.params.emplace_back();
    for (const auto& t : units[u].second) {
      auto v = engine.read_param(ids[u], t.name);
      run.params.back().emplace_back(v.begin(), v.end());
    }
  }
  return run;
}

// Runs f and expects it to throw zs::Error; returns the message ("" and a test failure when nothing throws).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a zs::Error, but nothing was thrown";
  return "";
}

// The largest |a - b| over all parameters, relative to the RMS of b's tensor (elements pass through zero,
// so per-element relative error would be meaningless).
inline double worst_rms_error(const std::vector<std::vector<std::vector<double>>>& a,
                              const std::vector<std::vector<std::vector<double>>>& b) {
  double worst = 0;
  for (std::size_t u = 0; u < b.size(); ++u)
    for (std::size_t t = 0; t < b[u].size(); ++t) {
      double rms = 0;
      for (double x : b[u][t]) rms += x * x;
      rms = std::sqrt(rms / static_cast<double>(b[u][t].size()));
      for (std::size_t e = 0; e < b[u][t].size(); ++e)
        worst = std::max(worst, std::fabs(a[u][t][e] - b[u][t][e]) / rms);
    }
  return worst;
}

inline std::string name(const Case& c, int world) {
  static const char* const opt[] = {"adamw", "adam", "sgd", "lion"};
  static const char* const off[] = {"", " offload optimizer", " offload optimizer+params"};
  return fmt::format("stage {} {} {}{} prefetch {} accumulation {}{} clip {}{}{}{} (world {})", c.stage,
                     dtype_name(c.param), opt[static_cast<int>(c.opt)], c.cosine ? " cosine" : "", c.prefetch, c.accum,
                     c.no_sync ? " no_sync" : "", c.clip, off[c.offload], c.delayed ? " delayed" : "",
                     c.bf16_states ? " bf16 states" : "", world);
}

}  // namespace zs::test
