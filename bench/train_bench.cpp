// train_bench: step time of a layer stack (one linear layer per unit, OpenBLAS sgemm on CPU) through
// the engine at each ZeRO stage and prefetch depth, and the communication the compute did not hide; with
// --accumulation, each way of accumulating (--accumulate) and the gradient memory it plans. Launch with
// zsrun; rank 0 prints the table.
#include <cblas.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "runtime/cli.h"
#include "runtime/engine.h"

namespace {

using namespace zs;

struct Args {
  int layers = 8;
  int dim = 1024;
  int batch = 256;
  int steps = 2;
  int rounds = 7;
  std::vector<int> stages = {0, 3};
  std::vector<int> prefetch = {0, 2};
  std::vector<std::string> offload = {"none"};      // none | optimizer | optimizer+params (stage 3) | delayed
  std::vector<float> clip = {0.0f};                 // optimizer.clip_grad_norm (0: off)
  int accumulation = 1;                             // zero.grad_accumulation: micro-batches per step
  std::vector<std::string> accumulate = {"every"};  // every (reduce every micro-batch) | device | no_sync
};

// One unit: y = tanh(x W^T + b). The app keeps activations (batch x dim per layer) and computes with the
// gathered weights, as a user's trainer would.
struct Stack {
  Args a;
  std::vector<std::vector<float>> acts;  // acts[l] = input of layer l; acts[L] = output
  std::vector<float> dy, dx, w32;

  void run_step(Engine& e) {
    for (int mb = 0; mb < e.config().zero.grad_accumulation; ++mb) micro_batch(e, mb);
    e.step();
  }

  void micro_batch(Engine& e, int mb) {
    const int L = a.layers, D = a.dim, B = a.batch;
    acts.assign(static_cast<std::size_t>(L + 1), std::vector<float>(static_cast<std::size_t>(B) * D));
    for (std::size_t i = 0; i < acts[0].size(); ++i) acts[0][i] = std::sin(0.001f * static_cast<float>(i) + mb);
    for (int l = 0; l < L; ++l) {
      GatheredParams p = e.gather(l);
      const float* w = p.tensor(0).as<float>();
      const float* b = p.tensor(1).as<float>();
      float* y = acts[static_cast<std::size_t>(l + 1)].data();
      for (int r = 0; r < B; ++r) std::copy(b, b + D, y + static_cast<std::ptrdiff_t>(r) * D);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, D, D, 1.0f, acts[static_cast<std::size_t>(l)].data(), D,
                  w, D, 1.0f, y, D);
      for (int i = 0; i < B * D; ++i) y[i] = std::tanh(y[i]);
    }
    // Loss = mean(y^2) / 2: dL/dy = y / (B * D).
    dy = acts[static_cast<std::size_t>(L)];
    for (float& v : dy) v /= static_cast<float>(B) * D;
    dx.resize(dy.size());
    for (int l = L - 1; l >= 0; --l) {
      GatheredParams p = e.gather(l);
      const float* w = p.tensor(0).as<float>();
      const float* y = acts[static_cast<std::size_t>(l + 1)].data();
      for (int i = 0; i < B * D; ++i) dy[static_cast<std::size_t>(i)] *= 1 - y[i] * y[i];
      TensorView gw = e.grads(l, 0), gb = e.grads(l, 1);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, D, B, 1.0f, dy.data(), D,
                  acts[static_cast<std::size_t>(l)].data(), D, 1.0f, gw.as<float>(), D);
      for (int r = 0; r < B; ++r)
        for (int j = 0; j < D; ++j)
          gb.as<float>()[j] += dy[static_cast<std::size_t>(r) * D + static_cast<std::size_t>(j)];
      e.reduce_grads(l);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, D, 1.0f, dy.data(), D, w, D, 0.0f, dx.data(), D);
      std::swap(dx, dy);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"train_bench: engine step time per ZeRO stage and prefetch depth (f32, CPU or GPU)", "train_bench"};
  app.add_option("--layers", a.layers, "units (one linear layer each)")->capture_default_str();
  app.add_option("--dim", a.dim, "layer width")->capture_default_str();
  app.add_option("--batch", a.batch, "rows per rank")->capture_default_str();
  app.add_option("--steps", a.steps, "timed steps per round")->capture_default_str();
  app.add_option("--rounds", a.rounds, "rounds; configurations take turns in each, the median round is reported")
      ->capture_default_str();
  app.add_option("--stages", a.stages, "stages to run")->capture_default_str();
  app.add_option("--prefetch", a.prefetch, "prefetch depths to run at stage 3")->capture_default_str();
  app.add_option("--offload", a.offload,
                 "offload choices to run at stages 1-3: none, optimizer, optimizer+params (stage 3), delayed")
      ->check(zs::offload_choices())
      ->capture_default_str();
  app.add_option("--clip", a.clip,
                 "clipping norms to run (0: off; an offloaded update then starts as each unit's gradients land)")
      ->check(zs::non_negative())
      ->capture_default_str();
  app.add_option("--accumulation", a.accumulation, "micro-batches per step (zero.grad_accumulation)")
      ->check(zs::positive())
      ->capture_default_str();
  app.add_option("--accumulate", a.accumulate,
                 "with accumulation at stages 2-3: every (reduce every micro-batch into the shard; offloaded units "
                 "add them up on the host), device (the same, offloaded units adding up on the device: "
                 "offload.accumulate: device), no_sync (keep full gradients, reduce once)")
      ->check(CLI::IsMember({"every", "device", "no_sync"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    openblas_set_num_threads(1);  // one core per rank: the ranks share the machine
    ProcessGroupOptions po;
    po.backend = Backend::gloo;
    ProcessGroup pg = init_process_group(po);
    const bool root = pg.world->rank() == 0;
    if (root) {
      std::printf(
          "# train_bench: %d ranks, %d layers of %dx%d (%.1f M params), batch %d per rank x %d micro-batches, f32, "
          "AdamW\n",
          pg.world->size(), a.layers, a.dim, a.dim, a.layers * (a.dim * (a.dim + 1.0)) / 1e6, a.batch, a.accumulation);
      std::printf("# %5s %8s %-17s %4s %-10s %14s %16s %10s %11s\n", "stage", "prefetch", "offload", "clip",
                  "accumulate", "step (ms)", "exposed comm (ms)", "vs first", "grads (MiB)");
    }
    // Every configuration lives at once and they take turns, round after round, so drift in the
    // machine's speed hits all of them alike; the median round is reported.
    struct Run {
      int stage, prefetch;
      std::string offload;
      float clip;
      std::string accumulate;
      std::unique_ptr<Engine> engine;
      std::vector<double> ms, exposed;
    };
    std::vector<Run> runs;
    for (int stage : a.stages)
      for (int pf : stage == 3 ? a.prefetch : std::vector<int>{0})
        for (const std::string& off : a.offload)
          for (float clip : a.clip)
            for (const std::string& acc :
                 stage >= 2 && a.accumulation > 1 ? a.accumulate : std::vector<std::string>{"-"}) {
              Config cfg;
              cfg.zero.grad_accumulation = a.accumulation;
              cfg.zero.reduce_every_micro_batch = acc != "no_sync";
              cfg.zero.stage = stage;
              cfg.zero.prefetch = pf;
              cfg.zero.max_live_units = pf + 2;
              cfg.optimizer.lr = 1e-4f;
              cfg.optimizer.clip_grad_norm = clip;
              cfg.offload.choose(off);
              if (acc == "device") {
                if (!cfg.offload.optimizer_on_cpu()) continue;  // the same as every without offload
                cfg.offload.accumulate = "device";
              }
              if (!offload_problem(cfg).empty()) continue;  // e.g. offload at stage 0: not a configuration
              auto e = std::make_unique<Engine>(cfg, *pg.world);
              for (int l = 0; l < a.layers; ++l)
                e->add_unit("layer" + std::to_string(l), {{"w", {a.dim, a.dim}}, {"b", {a.dim}, true, false}});
              e->init_params(init::normal(0.02f, 1));
              runs.push_back({stage, pf, off, clip, acc, std::move(e), {}, {}});
            }
    Stack s{a, {}, {}, {}, {}};
    for (auto& r : runs) s.run_step(*r.engine);  // records each engine's gather order
    for (int round = 0; round < a.rounds; ++round)
      for (auto& r : runs) {
        pg.world->barrier().wait();
        r.engine->reset_exposed_comm();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < a.steps; ++i) s.run_step(*r.engine);
        r.engine->synchronize();  // an offloaded update still running belongs to this configuration's time
        pg.world->barrier().wait();
        r.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
                       a.steps);
        r.exposed.push_back(1e3 * r.engine->exposed_comm_seconds() / a.steps);
      }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double base = median(runs.front().ms);
    for (auto& r : runs)
      if (root)
        std::printf("  %5d %8d %-17s %4g %-10s %14.1f %16.1f %9.1f%% %11.1f   (rounds: %s)\n", r.stage, r.prefetch,
                    r.offload.c_str(), r.clip, r.accumulate.c_str(), median(r.ms), median(r.exposed),
                    100.0 * median(r.ms) / base,
                    static_cast<double>(r.engine->memory_plan().device[static_cast<std::size_t>(MemCategory::grads)]) /
                        (1 << 20),
                    [&] {
                      std::string out;
                      for (double m : r.ms) out += fmt::format("{:.0f} ", m);
                      return out;
                    }()
                        .c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_bench: %s\n", e.what());
    return 1;
  }
}
