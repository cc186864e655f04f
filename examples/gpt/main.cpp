// gpt_train: trains a byte-level GPT with ZeroShard under zsrun, on CUDA when there is a GPU, else the CPU.
//
//   zsrun --nproc-per-node 2 -- gpt_train --steps 300 --export model.safetensors
//
// By default it reads this project's own sources and docs (present on any machine that built it), holds
// out the last 10 % for validation, and trains with ZeRO-3 (an embedded config; --config for your own).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/buffer.h"
#include "core/byte_size.h"
#include "core/log.h"
#include "examples/gpt/data.h"
#include "examples/gpt/trainer.h"
#include "runtime/checkpoint.h"
#include "runtime/cli.h"

extern "C" void openblas_set_num_threads(int);

namespace {

constexpr const char* kDefaultConfig = R"(
zero:
  stage: 3
  prefetch: 2
optimizer:
  type: adamw
  lr: 0.002
  betas: [0.9, 0.95]
  weight_decay: 0.1
  clip_grad_norm: 1.0
schedule:
  type: cosine
  warmup_steps: 20
  total_steps: 300
  min_lr_ratio: 0.1
device: auto
)";

// The ledger's peak per category on this rank's device, and on a GPU the card's memory in use beside it (the
// CUDA context and cuBLAS's workspace are outside the ledger); then the engine's host memory, when it has
// any (offload, a checkpoint.async copy).
void print_memory(const zs::Engine& e) {
  const zs::MemoryReport m = e.memory();
  auto by_category = [](const std::array<zs::MemStats, zs::kMemCategoryCount>& stats) {
    std::string line;
    for (int c = 0; c < zs::kMemCategoryCount; ++c)
      if (const auto& s = stats[static_cast<std::size_t>(c)]; s.peak > 0)
        line +=
            fmt::format(" {} {} |", zs::mem_category_name(static_cast<zs::MemCategory>(c)), zs::format_bytes(s.peak));
    return line;
  };
  std::string cuda;
  if (const zs::DeviceMemoryUse use = zs::device_memory_use(e.device()); use.total > 0)
    cuda = fmt::format("; cuda in use {} of {}", zs::format_bytes(use.used), zs::format_bytes(use.total));
  std::printf("memory (rank 0, %s, peak by category):%s total %s%s\n", e.device().is_cpu() ? "cpu" : "cuda",
              by_category(m.on_device).c_str(), zs::format_bytes(m.device_total.peak).c_str(), cuda.c_str());
  if (m.host_total.peak > 0)
    std::printf("host memory (rank 0):%s total %s\n", by_category(m.on_host).c_str(),
                zs::format_bytes(m.host_total.peak).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  gpt::Shape shape;
  int steps = 300, batch = 8, log_every = 20, eval_every = 100, eval_batches = 4, save_every = 0, threads = 0;
  int stage = -1, sample = 0, accumulation = 0;
  std::string offload, device, precision, nvme_path;  // empty: the config's
  std::string attention = "auto";
  uint64_t seed = 1337;
  double lr = 0, check_below = 0, offload_ratio = 1;
  bool resume = false, checkpoint_activations = false, async_checkpoint = false;
  std::string config_path, ckpt_dir, export_path;
  std::vector<std::string> data{ZS_EXAMPLE_DATA};
  CLI::App app{"gpt_train: a byte-level GPT trained with ZeroShard (run it under zsrun)", "gpt_train"};
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str()->check(zs::positive());
  app.add_option("--batch", batch, "sequences per rank per micro-batch")->capture_default_str()->check(zs::positive());
  app.add_option("--seq", shape.seq, "context length")->capture_default_str()->check(zs::positive());
  app.add_option("--d-model", shape.d, "width")->capture_default_str()->check(zs::positive());
  app.add_option("--layers", shape.layers, "blocks")->capture_default_str()->check(zs::positive());
  app.add_option("--heads", shape.heads, "attention heads")->capture_default_str()->check(zs::positive());
  app.add_option("--config", config_path,
                 "engine YAML (docs/config.md); default: zsrun --config's, else ZeRO-3, AdamW, cosine");
  app.add_option("--stage", stage, "override zero.stage")->check(CLI::Range(0, 3));
  app.add_option("--accumulation", accumulation,
                 "override zero.grad_accumulation: micro-batches of --batch sequences per rank and step")
      ->check(zs::positive());
  app.add_option("--offload", offload,
                 "override offload: none, optimizer (stages 1-3), optimizer+params (stage 3), delayed, nvme or "
                 "nvme+params (the optimizer's state on disk, in --nvme-path), optimizer+nvme-params or "
                 "nvme+nvme-params (the parameters on disk too; stage 3, and bf16/f16 with the optimizer's state in "
                 "memory), nvme+nvme-grads, nvme+nvme-grads+params or nvme+nvme-grads+nvme-params (the gradient "
                 "shards on disk too)")
      ->check(zs::offload_choices());
  app.add_option(
      "--nvme-path", nvme_path,
      "override offload.nvme_path: the directory for the files of --offload nvme, nvme-params and nvme-grads "
      "(default: the system's temporary directory)");
  auto* ratio_given = app.add_option("--offload-ratio", offload_ratio,
                                     "override offload.ratio: the share of the parameters whose optimizer runs on the "
                                     "host with --offload optimizer (the last units; the rest on the device)")
                          ->check(zs::offload_ratio());
  app.add_option("--lr", lr, "override optimizer.lr")->check(zs::positive());
  app.add_option("--device", device, "override device: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--precision", precision,
                 "override precision: f32, or bf16 (CUDA: bf16 parameters and activations, f32 gradients and master)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--attention", attention,
                 "plain (any device and precision; keeps batch x heads x seq^2 probabilities), fused (CUDA, bf16, "
                 "head size 16/32/64/128: tiles, no probabilities, faster) or auto (fused where it runs)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "plain", "fused"}));
  app.add_option("--vocab", shape.vocab, "vocabulary size (tokens are bytes; a larger table for benchmarks)")
      ->capture_default_str()
      ->check(CLI::Range(256, 1 << 20));
  app.add_option("--data", data, "text files or directories")->capture_default_str();
  app.add_option("--seed", seed, "initialisation and data order")->capture_default_str();
  app.add_option("--log-every", log_every, "print every N steps")->capture_default_str()->check(zs::positive());
  app.add_option("--eval-every", eval_every, "validation loss every N steps (0: only at the end)")
      ->capture_default_str()
      ->check(zs::non_negative());
  app.add_option("--eval-batches", eval_batches, "validation batches per rank (0: no validation)")
      ->capture_default_str()
      ->check(zs::non_negative());
  auto* ckpt_given = app.add_option("--ckpt-dir", ckpt_dir, "checkpoint directory");
  app.add_option("--save-every", save_every, "save a checkpoint every N steps")
      ->check(zs::positive())
      ->needs(ckpt_given);
  app.add_flag("--async-checkpoint", async_checkpoint,
               "save checkpoints in the background (checkpoint.async): a copy in host memory, written while "
               "training goes on");
  app.add_flag("--checkpoint-activations", checkpoint_activations,
               "keep only each block's input and run its forward again in the backward (less memory, one more "
               "forward per step)");
  app.add_flag("--resume", resume,
               "continue from the latest checkpoint in --ckpt-dir (or the --config's periodic checkpoint.dir), if "
               "there is one (implied when zsrun --max-restarts restarts the job)");
  app.add_option("--export", export_path, "write the trained parameters to this safetensors file")
      ->check(zs::output_file());
  std::string export_file_size = "0";
  app.add_option("--export-max-file-size", export_file_size,
                 "with --export: split into files of at most this much data (5GB; a bare number is bytes), "
                 "written with model.safetensors.index.json into the directory --export names (Hugging Face's "
                 "sharded layout)")
      ->check(zs::byte_size(1.0, "bytes"));
  app.add_option("--sample", sample, "print N bytes generated from the model at the end")->check(zs::non_negative());
  app.add_option("--threads", threads, "BLAS threads per rank (default: cores / local ranks)")->check(zs::positive());
  app.add_option("--check-loss-below", check_below, "exit 1 unless the final validation loss is below this");
  if (const auto stop = zs::parse_command_line(app, argc, argv)) return *stop;

  shape.attention = attention == "fused"   ? zs::family::Attention::fused
                    : attention == "plain" ? zs::family::Attention::plain
                                           : zs::family::Attention::automatic;
  try {
    if (config_path.empty()) config_path = zs::Config::job_path();  // zsrun --config
    zs::Config cfg = config_path.empty() ? zs::Config::from_yaml(kDefaultConfig, "<built-in config>")
                                         : zs::Config::from_yaml_file(config_path);
    if (config_path.empty()) cfg.schedule.total_steps = std::max<int64_t>(steps, cfg.schedule.warmup_steps + 1);
    if (stage >= 0) cfg.zero.stage = stage;
    if (accumulation > 0) cfg.zero.grad_accumulation = accumulation;
    const int micro = cfg.zero.grad_accumulation;
    if (!offload.empty()) cfg.offload.choose(offload);
    if (ratio_given->count() > 0) cfg.offload.ratio = offload_ratio;  // the engine checks it (offload_problem)
    if (!nvme_path.empty()) cfg.offload.nvme_path = nvme_path;
    if ((cfg.offload.state_on_nvme() || cfg.offload.params_on_nvme()) && cfg.offload.nvme_path.empty())
      cfg.offload.nvme_path = std::filesystem::temp_directory_path().string();
    if (lr > 0) cfg.optimizer.lr = static_cast<float>(lr);
    if (!device.empty()) cfg.device = device;
    if (!precision.empty()) {
      cfg.precision.param = precision == "bf16" ? zs::DType::bf16 : zs::DType::f32;
      cfg.precision.reduce = zs::DType::f32;
    }
    if (async_checkpoint) cfg.checkpoint.async = true;
    if (!ckpt_dir.empty()) {
      cfg.checkpoint.dir = ckpt_dir;
      cfg.checkpoint.every_steps = save_every;
    } else if (cfg.checkpoint.every_steps > 0) {
      ckpt_dir = cfg.checkpoint.dir;  // the config saves periodically: resume from there, save there at the end
    } else if (resume) {
      std::fprintf(stderr,
                   "--resume: no checkpoint directory; give --ckpt-dir, or a --config whose checkpoint.every_steps "
                   "saves to checkpoint.dir\n");
      return 2;
    }
    zs::Engine engine(cfg);
    const int rank = engine.comm().rank(), world = engine.comm().size();
    const char* lws = std::getenv("LOCAL_WORLD_SIZE");
    const int local = lws ? std::max(1, std::atoi(lws)) : 1;
    openblas_set_num_threads(threads > 0 ? threads
                                         : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local));
    gpt::Trainer model(engine, shape, batch, checkpoint_activations);
    const gpt::Corpus corpus = gpt::load_corpus(data, 0.1);
    // A job zsrun restarted after a failure continues from its latest checkpoint, as --resume does.
    const int restart = zs::job_env().restart_count;
    int64_t start = 0;
    if ((resume || restart > 0) && !ckpt_dir.empty() && !zs::ckpt::find_latest(ckpt_dir).empty()) {
      engine.load_checkpoint(ckpt_dir);
      start = engine.steps_done();
    } else {
      engine.init_params([&](std::string_view name) { return gpt::init_rule(name, shape, seed); });
    }
    if (rank == 0) {
      std::string off =
          cfg.offload.optimizer_on_cpu() ? ", offload " + std::string(cfg.offload.choice()) : std::string();
      if (cfg.offload.ratio < 1.0) off += fmt::format(" (ratio {})", cfg.offload.ratio);
      if (cfg.zero.hybrid_group > 0 && cfg.zero.hybrid_group < world)
        off += fmt::format(", hybrid: sharded within groups of {}, {} replicas", cfg.zero.hybrid_group,
                           world / cfg.zero.hybrid_group);
      std::printf("GPT d=%d L=%d H=%d T=%d V=%d%s: %.2f M parameters in %d units; ZeRO-%d over %d rank%s (%s%s)\n",
                  shape.d, shape.layers, shape.heads, shape.seq, shape.vocab,
                  model.shape().attention == zs::family::Attention::fused ? " (fused attention)" : "",
                  static_cast<double>(gpt::parameter_count(shape)) / 1e6, engine.num_units(), cfg.zero.stage, world,
                  world > 1 ? "s" : "", engine.device().is_cpu() ? "cpu, gloo" : "cuda, nccl", off.c_str());
      std::printf("data: %zu KB of text from %d files (train %zu KB, validation %zu KB); %d x %d tokens per rank%s\n",
                  (corpus.train.size() + corpus.val.size()) / 1000, corpus.files, corpus.train.size() / 1000,
                  corpus.val.size() / 1000, batch, shape.seq,
                  micro > 1 ? fmt::format(" and micro-batch, {} micro-batches per step", micro).c_str() : "");
      if (start > 0)
        std::printf("resumed from %s at step %lld%s\n", ckpt_dir.c_str(), static_cast<long long>(start),
                    start >= steps ? ": nothing to train up to --steps (raise it to train on)" : "");
      else if (restart > 0)
        std::printf("restart %d: %s, so training starts again from step 0\n", restart,
                    ckpt_dir.empty() ? "no --ckpt-dir" : "no checkpoint saved yet");
    }
    const std::size_t n = static_cast<std::size_t>(batch) * static_cast<std::size_t>(shape.seq);
    std::vector<int> tokens(n), targets(n);
    auto mean_over_ranks = [&](double v) {
      return static_cast<double>(engine.comm().all_reduce_value(static_cast<float>(v), zs::ReduceOp::avg));
    };
    auto validate = [&] {
      double sum = 0;
      for (int b = 0; b < eval_batches; ++b) {  // the same batches every time: a comparable curve
        gpt::sample_batch(corpus.val, seed, -1 - b, rank, batch, shape.seq, tokens.data(), targets.data());
        sum += model.loss(tokens.data(), targets.data());
      }
      return mean_over_ranks(sum / eval_batches);
    };
    const bool tty = isatty(STDOUT_FILENO) != 0;
    double window_loss = 0, window_s = 0, val = NAN;
    int window = 0;
    for (int64_t step = start; step < steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      double loss = 0;  // the step's mean over its micro-batches (each one's own batch of the data)
      for (int mb = 0; mb < micro; ++mb) {
        gpt::sample_batch(corpus.train, seed, step * micro + mb, rank, batch, shape.seq, tokens.data(), targets.data());
        loss += model.train(tokens.data(), targets.data()) / micro;
      }
      const zs::StepStats st = engine.step();
      window_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      window_loss += loss;
      ++window;
      const bool last = step + 1 == steps;
      if ((eval_every > 0 && (step + 1) % eval_every == 0) || last) val = validate();
      if ((step + 1) % log_every == 0 || last) {
        const double train_loss = mean_over_ranks(window_loss / window);
        // Offloaded: the CPU's update time per step, how long the next forward waited for it, with the state
        // on disk how long the CPU waited for its reads, with the parameters on disk how long the gathers
        // waited for theirs and how many of their shards came from the disk rather than a slot, and with the
        // gradients on disk how long the CPU waited for theirs and the backward for a free slot; with the
        // micro-batches added up on the host, the adds' time and the backward's wait for a staging buffer.
        const zs::offload::Timing ot = engine.take_offload_timing();
        std::string offload = ot.updates > 0 ? fmt::format(" | CPU step {:.1f} ms, waited {:.1f} ms",
                                                           ot.update_ms / window, ot.wait_ms / window)
                                             : "";
        if (ot.updates > 0 && cfg.offload.state_on_nvme())
          offload += fmt::format(", disk {:.1f} ms", ot.disk_wait_ms / window);
        if (ot.updates > 0 && cfg.host_accumulation())
          offload += fmt::format(", adds {:.1f} ms (waited {:.1f} ms)", ot.accumulate_ms / window,
                                 ot.staging_wait_ms / window);
        if (ot.updates > 0 && ot.param_disk.acquires > 0)
          offload += fmt::format(", params read {:.1f} ms ({} of {} gathers)", ot.param_disk.wait_ms / window,
                                 ot.param_disk.reads, ot.param_disk.acquires);
        if (ot.updates > 0 && ot.grad_disk.acquires > 0)
          offload +=
              fmt::format(", grads read {:.1f} ms ({} of {}), written behind {:.1f} ms", ot.grad_disk.wait_ms / window,
                          ot.grad_disk.reads, ot.grad_disk.acquires, ot.grad_disk.write_wait_ms / window);
        if (rank == 0) {
          if (tty) std::printf("\r\033[K");
          std::printf("step %5lld/%d | loss %.3f | val %s | lr %.2e | |g| %.2f | %.0f ms/step | %.1fk tok/s%s\n",
                      static_cast<long long>(step + 1), steps, train_loss,
                      std::isnan(val) ? "  -  " : fmt::format("{:.3f}", val).c_str(), st.lr, st.grad_norm,
                      1e3 * window_s / window, static_cast<double>(n) * micro * world * window / window_s / 1e3,
                      offload.c_str());
          if (step + 1 == log_every || last) print_memory(engine);
          std::fflush(stdout);
        }
        window_loss = window_s = 0;
        window = 0;
      } else if (rank == 0 && tty) {
        const int width = 30,
                  filled = static_cast<int>(width * (step + 1 - (step + 1) / log_every * log_every) / log_every);
        std::printf("\r[%s%s] step %lld", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                    std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                    static_cast<long long>(step + 1));
        std::fflush(stdout);
      }
    }
    const int64_t every = cfg.checkpoint.every_steps;
    const bool saved_by_step = every > 0 && engine.steps_done() % every == 0;  // step() just saved this one
    if (!ckpt_dir.empty() && engine.steps_done() > start && !saved_by_step) engine.save_checkpoint(ckpt_dir);
    engine.wait_checkpoint();  // (checkpoint.async) the last save is committed, or its failure is the exit status
    if (!export_path.empty()) {
      engine.save_weights(export_path, zs::DType::f32, static_cast<int64_t>(*zs::parse_byte_size(export_file_size)));
      if (rank == 0) std::printf("exported %s (%d units)\n", export_path.c_str(), engine.num_units());
    }
    if (sample > 0) {
      const std::string text = model.generate("// The engine", sample, seed);
      if (rank == 0) std::printf("sample: // The engine%s\n", text.c_str());
    }
    if (check_below > 0 && !(val < check_below)) {
      if (rank == 0) std::fprintf(stderr, "validation loss %.3f is not below %.3f\n", val, check_below);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpt_train: %s\n", e.what());
    return 1;
  }
}
