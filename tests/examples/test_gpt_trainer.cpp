// The GPT trainer through a CPU engine at world 1: activation checkpointing changes what is kept between
// the forward and the backward, not the results (the block's forward runs again on the same input with the
// same code, so every loss and every trained parameter is bit-identical). And gpt_train's command line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "examples/gpt/trainer.h"
#include "runtime/model_family.h"
#include "tests/run_command.h"

namespace gpt {
namespace {

struct Trained {
  std::vector<double> losses;
  std::vector<std::vector<float>> params;
};

// One rank over Gloo, and a CPU engine's config.
zs::ProcessGroup gloo_world() {
  zs::ProcessGroupOptions o;
  o.backend = zs::Backend::gloo;
  return zs::init_process_group(o);
}

zs::Config cpu_config() {
  zs::Config cfg;
  cfg.device = "cpu";
  return cfg;
}

Trained train(bool recompute) {
  zs::ProcessGroup pg = gloo_world();
  Shape shape;
  shape.d = 32, shape.layers = 3, shape.heads = 4, shape.seq = 16;
  const int batch = 2;
  zs::Config cfg = cpu_config();
  cfg.optimizer.lr = 3e-3f;
  zs::Engine e(cfg, *pg.world);
  Trainer model(e, shape, batch, recompute);
  e.init_params([&](std::string_view name) { return init_rule(name, shape, 5); });
  Trained r;
  std::vector<int> tokens(static_cast<std::size_t>(batch * shape.seq)), targets(tokens.size());
  for (int s = 0; s < 4; ++s) {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<int>((i * 5 + static_cast<std::size_t>(s) * 11) % 89);
      targets[i] = static_cast<int>((i * 5 + static_cast<std::size_t>(s) * 11 + 3) % 89);
    }
    r.losses.push_back(model.train(tokens.data(), targets.data()));
    e.step();
  }
  for (zs::UnitId u = 0; u < e.num_units(); ++u)
    for (const auto& t : e.unit(u).tensors) r.params.push_back(e.read_param(u, t.name));
  return r;
}

TEST(GptTrainer, ActivationCheckpointingKeepsLessAndChangesNothing) {
  const Trained kept = train(false), recomputed = train(true);
  EXPECT_EQ(recomputed.losses, kept.losses);
  EXPECT_EQ(recomputed.params, kept.params);
  EXPECT_LT(kept.losses.back(), kept.losses.front());  // it trains: the comparison is not of idle runs
  // What it saves, by zsmem's count: all but one block's internals (with fused attention, the default on
  // CUDA in bf16, a block's internals include its queries' log-sum-exps: batch x heads x seq floats).
  zs::family::Gpt g;
  g.d = 1024, g.layers = 24, g.heads = 16, g.seq = 1024, g.vocab = 32000;
  const int64_t full = zs::family::gpt_activation_bytes(g, 8, false, zs::DType::bf16, zs::DType::f32),
                ckpt = zs::family::gpt_activation_bytes(g, 8, false, zs::DType::bf16, zs::DType::f32, true);
  EXPECT_EQ(full - ckpt, int64_t{23} * (9 * 8192 * 1024 * 2 + 4 * 8192 * 4 + 8 * 16 * 1024 * 4));
}

// Fused attention runs on CUDA in bf16 (its values are checked against the CPU layers by the gpu tests,
// its memory by zsmem's tests): asked for on the CPU, the trainer refuses it, naming the fix; the default
// (automatic) computes plain attention there.
TEST(GptTrainer, FusedAttentionNeedsCuda) {
  zs::ProcessGroup pg = gloo_world();
  zs::Config cfg = cpu_config();
  Shape shape;
  {
    zs::Engine e(cfg, *pg.world);
    EXPECT_EQ(Trainer(e, shape, 2).shape().attention, zs::family::Attention::plain);
  }
  zs::Engine e(cfg, *pg.world);
  shape.attention = zs::family::Attention::fused;
  try {
    Trainer model(e, shape, 2);
    ADD_FAILURE() << "fused attention ran on the CPU";
  } catch (const std::exception& err) {
    EXPECT_NE(std::string(err.what()).find("drop --attention fused"), std::string::npos) << err.what();
  }
}

// zsmem measure compares each rank's ledger with its memory report's plan: a program's own activation
// buffers on the device (the CUDA layers declare theirs, zsmem's formula for them) are planned there beside
// the engine's tables.
TEST(GptTrainer, TheMemoryReportPlansDeclaredActivations) {
  zs::ProcessGroup pg = gloo_world();
  zs::Config cfg = cpu_config();
  zs::Engine e(cfg, *pg.world);
  Trainer model(e, Shape{}, 2);
  e.declare_activations(4096, 256);
  const zs::Buffer activations(4096, zs::MemoryKind::device, e.device(), zs::MemCategory::activations);
  const zs::Buffer staging(256, zs::MemoryKind::pinned, zs::Device::cpu(), zs::MemCategory::activations);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("zs_memory_report_" + std::to_string(getpid()));
  e.write_memory_report(dir.string());
  std::ifstream f(dir / "rank-0.json");
  const nlohmann::json j = nlohmann::json::parse(f);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(j["categories"]["activations"]["planned"].get<int64_t>(), 4096);
  EXPECT_EQ(j["categories"]["activations"]["peak"].get<int64_t>(), 4096);
  EXPECT_EQ(j["planned_total"].get<int64_t>(), e.memory_plan().device_total() + 4096);
  EXPECT_EQ(j["host_categories"]["activations"]["planned"].get<int64_t>(), 256);
  EXPECT_EQ(j["host_categories"]["activations"]["peak"].get<int64_t>(), 256);
  EXPECT_EQ(j["host_planned_total"].get<int64_t>(), e.memory_plan().host_total() + 256);
}

// gpt_train's command line: nonsense exits 2 naming the option and what was wrong, before any engine starts.
TEST(GptTrainer, NonsenseArgumentsExitTwoSayingWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {"--steps 0", "--steps: '0' is not a positive number"},
      {"--lr -1", "--lr: '-1' is not a positive number"},
      {"--log-every 0", "--log-every: '0' is not a positive number"},
      {"--eval-every -1", "--eval-every: '-1' is not a number >= 0"},
      {"--threads 0", "--threads: '0' is not a positive number"},
      {"--sample -4", "--sample: '-4' is not a number >= 0"},
      {"--save-every 5", "--save-every requires --ckpt-dir"},
      {"--resume", "--resume: no checkpoint directory; give --ckpt-dir"},
      {"--stage 4", "--stage"},
      {"--offload everything", "--offload"},
      {"--offload-ratio 2", "--offload-ratio: '2' is not in (0, 1]"},
      {"--export /nonexistent-dir/m.safetensors", "directory '/nonexistent-dir' does not exist"}};
  for (const auto& [args, want] : cases) {
    const zs::test::CommandResult p = zs::test::run_command(std::string(ZS_GPT_TRAIN_PATH) + " " + args);
    EXPECT_EQ(p.rc, 2) << args << "\n" << p.output;
    EXPECT_NE(p.output.find(want), std::string::npos) << args << "\n" << p.output;
  }
}

// zsrun --config hands its file to the ranks in ZS_CONFIG: gpt_train takes it when given no --config.
TEST(GptTrainer, TakesTheJobsConfigFromZsrun) {
  namespace fs = std::filesystem;
  const fs::path yaml = fs::temp_directory_path() / ("zs_gpt_job_" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(yaml) << "zero: {stage: 2}\n";
  const zs::test::CommandResult r =
      zs::test::run_command("ZS_CONFIG=" + yaml.string() + " " + ZS_GPT_TRAIN_PATH +
                            " --layers 1 --d-model 32 --heads 2 --seq 16 --batch 2 --steps 1 --eval-batches 0");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("ZeRO-2 over 1 rank"), std::string::npos) << r.output;
  fs::remove(yaml);
}

// A job that zsrun restarts (ZS_RESTART_COUNT > 0) continues from --ckpt-dir's latest checkpoint without
// --resume, and ends with the parameters of a run that was never interrupted; without a checkpoint it says
// that it starts again.
TEST(GptTrainer, ARestartedJobContinuesFromItsCheckpoint) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("zs_gpt_restart_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string prog = std::string(ZS_GPT_TRAIN_PATH) +
                           " --layers 1 --d-model 32 --heads 2 --seq 16 --batch 2 --threads 1 --eval-batches 0"
                           " --log-every 100";
  const std::string ckpt = (dir / "ckpt").string(), straight = (dir / "straight.safetensors").string(),
                    restarted = (dir / "restarted.safetensors").string();
  const zs::test::CommandResult first =
      zs::test::run_command(prog + " --steps 4 --ckpt-dir " + ckpt + " --save-every 2");
  ASSERT_EQ(first.rc, 0) << first.output;
  const zs::test::CommandResult second =
      zs::test::run_command("ZS_RESTART_COUNT=1 " + prog + " --steps 6 --ckpt-dir " + ckpt + " --export " + restarted);
  ASSERT_EQ(second.rc, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from " + ckpt + " at step 4"), std::string::npos) << second.output;
  const zs::test::CommandResult whole = zs::test::run_command(prog + " --steps 6 --export " + straight);
  ASSERT_EQ(whole.rc, 0) << whole.output;
  auto bytes = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  const std::string a = bytes(restarted), b = bytes(straight);
  EXPECT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "the restarted run's parameters differ from the uninterrupted run's";
  // The same when the checkpoints come from the config's checkpoint section instead of --ckpt-dir.
  const fs::path yaml = dir / "train.yaml";
  std::ofstream(yaml) << "checkpoint: {dir: " << (dir / "from_config").string() << ", every_steps: 2}\n";
  const std::string with_config = prog + " --config " + yaml.string();
  ASSERT_EQ(zs::test::run_command(with_config + " --steps 2").rc, 0);
  const zs::test::CommandResult again = zs::test::run_command("ZS_RESTART_COUNT=1 " + with_config + " --steps 3");
  EXPECT_NE(again.output.find("resumed from " + (dir / "from_config").string() + " at step 2"), std::string::npos)
      << again.output;
  const zs::test::CommandResult bare = zs::test::run_command("ZS_RESTART_COUNT=2 " + prog + " --steps 1");
  EXPECT_EQ(bare.rc, 0) << bare.output;
  EXPECT_NE(bare.output.find("restart 2: no --ckpt-dir, so training starts again from step 0"), std::string::npos)
      << bare.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gpt
