// Config from YAML: defaults, every section read, and errors that name the key, line:column and a fix.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "core/error.h"
#include "optim/schedule.h"
#include "runtime/config.h"

namespace zs {
namespace {

std::string error_of(const std::string& yaml) {
  try {
    Config::from_yaml(yaml, "train.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, ReadsTheDesignExample) {
  Config c = Config::from_yaml(R"(
zero:      { stage: 2, prefetch: 1, max_live_units: 3, reshard_after_forward: false, hybrid_group: 0 }
precision: { param: bf16, reduce: fp32, master: fp32, loss_scale: dynamic }
optimizer: { type: lion, lr: 1.0e-4, betas: [0.9, 0.99], eps: 1.0e-8, weight_decay: 0.1, clip_grad_norm: 1.0 }
schedule:  { type: cosine, warmup_steps: 100, total_steps: 10000, min_lr_ratio: 0.1 }
offload:   { optimizer: cpu, params: none, pin_memory: true, mode: streaming }
comm:      { backend: gloo, timeout_s: 30 }
device: cpu
checkpoint: { dir: ckpt, every_steps: 500, keep: 3, async: true }
)");
  EXPECT_EQ(c.zero.stage, 2);
  EXPECT_EQ(c.zero.prefetch, 1);
  EXPECT_FALSE(c.zero.reshard_after_forward);
  EXPECT_EQ(c.precision.param, DType::bf16);
  EXPECT_EQ(c.precision.loss_scale, "dynamic");
  EXPECT_EQ(c.optimizer.type, kernels::Optimizer::lion);
  EXPECT_FLOAT_EQ(c.optimizer.beta2, 0.99f);
  EXPECT_EQ(c.schedule.kind, ScheduleKind::cosine);
  EXPECT_EQ(c.offload.optimizer, "cpu");
  EXPECT_EQ(c.comm.timeout_s, 30);
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.checkpoint.every_steps, 500);
  EXPECT_TRUE(c.checkpoint.async);
  Config d = Config::from_yaml("");
  EXPECT_FALSE(d.checkpoint.async);
  EXPECT_TRUE(d.zero.reduce_every_micro_batch);
  EXPECT_FALSE(d.zero.sharded_accumulation());
  const Config no_sync = Config::from_yaml("zero: { grad_accumulation: 4, reduce_every_micro_batch: false }");
  EXPECT_FALSE(no_sync.zero.reduce_every_micro_batch);
  EXPECT_TRUE(no_sync.zero.full_grads());
  EXPECT_TRUE(Config::from_yaml("zero: { grad_accumulation: 4 }").zero.sharded_accumulation());
  // Where offloaded units add their micro-batches up: the host unless the gradients are on disk, or as said.
  EXPECT_FALSE(d.host_accumulation());
  EXPECT_TRUE(Config::from_yaml("zero: { grad_accumulation: 4 }\noffload: { optimizer: cpu }").host_accumulation());
  EXPECT_FALSE(Config::from_yaml("zero: { grad_accumulation: 4 }\noffload: { optimizer: cpu, accumulate: device }")
                   .host_accumulation());
  EXPECT_FALSE(Config::from_yaml("zero: { grad_accumulation: 4, reduce_every_micro_batch: false }\n"
                                 "offload: { optimizer: cpu }")
                   .host_accumulation());
  EXPECT_FALSE(Config::from_yaml("zero: { grad_accumulation: 4 }\n"
                                 "offload: { optimizer: nvme, grads: nvme, nvme_path: /x }")
                   .host_accumulation());
  EXPECT_EQ(d.zero.stage, 3);
  EXPECT_EQ(d.precision.param, DType::f32);
}

TEST(Config, UnknownKeyNamesLineColumnAndClosestKey) {
  const std::string e = error_of("zero:\n  stage: 3\n  prefech: 2\n");
  EXPECT_NE(e.find("train.yaml:3:3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'prefech' in 'zero'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'prefetch'"), std::string::npos) << e;
  const std::string top = error_of("optimiser: {lr: 1}\n");
  EXPECT_NE(top.find("train.yaml:1:1"), std::string::npos) << top;
  EXPECT_NE(top.find("did you mean 'optimizer'"), std::string::npos) << top;
}

TEST(Config, WrongTypesAndRangesAreNamed) {
  std::string e = error_of("zero:\n  stage: three\n");
  EXPECT_NE(e.find("train.yaml:2:10"), std::string::npos) << e;
  EXPECT_NE(e.find("zero.stage: expected an integer, got 'three'"), std::string::npos) << e;
  e = error_of("zero: {stage: 7}\n");
  EXPECT_NE(e.find("zero.stage must be 0, 1, 2 or 3, got 7"), std::string::npos) << e;
  e = error_of("optimizer: {betas: [0.9]}\n");
  EXPECT_NE(e.find("optimizer.betas must be two numbers in [0, 1), got [0.9]"), std::string::npos) << e;
  e = error_of("precision: {loss_scale: 0}\n");
  EXPECT_NE(e.find("got '0' (DeepSpeed's loss_scale: 0 is 'dynamic' here"), std::string::npos) << e;
  // DeepSpeed's fp16 settings: a fixed scale, and the dynamic one's start, window, hysteresis and minimum.
  const Config fixed = Config::from_yaml("precision: {param: fp16, loss_scale: 128}\n");
  EXPECT_EQ(fixed.precision.loss_scale, "fixed");
  EXPECT_EQ(fixed.precision.fixed_loss_scale, 128.0);
  const Config tuned = Config::from_yaml(
      "precision: {param: fp16, loss_scale: dynamic, initial_scale_power: 12, loss_scale_window: 500, hysteresis: 3, "
      "min_loss_scale: 0.25}\n");
  EXPECT_EQ(tuned.precision.initial_scale_power, 12);
  EXPECT_EQ(tuned.precision.loss_scale_window, 500);
  EXPECT_EQ(tuned.precision.hysteresis, 3);
  EXPECT_EQ(tuned.precision.min_loss_scale, 0.25);
  e = error_of("precision:\n  loss_scale: -8\n");
  EXPECT_NE(e.find("train.yaml:2:15: precision.loss_scale must be none, dynamic or a fixed scale > 0, got '-8'"),
            std::string::npos)
      << e;
  EXPECT_NE(error_of("precision: {loss_scale: static}\n").find("got 'static'"), std::string::npos);
  EXPECT_NE(error_of("precision: {hysteresis: 0}\n").find("precision.hysteresis must be >= 1, got 0"),
            std::string::npos);
  e = error_of("precision: {param: int8}\n");
  EXPECT_NE(e.find("precision.param must be one of fp32, bf16, fp16, got 'int8'"), std::string::npos) << e;
  e = error_of("checkpoint:\n  async: sometimes\n");
  EXPECT_NE(e.find("train.yaml:2:10"), std::string::npos) << e;
  EXPECT_NE(e.find("checkpoint.async"), std::string::npos) << e;
  e = error_of("optimizer: {type: adagrad}\n");
  EXPECT_NE(e.find("must be one of adamw, adam, sgd, lion"), std::string::npos) << e;
  e = error_of("zero: {prefetch: 4, max_live_units: 2}\n");
  EXPECT_NE(e.find("max_live_units (2) must be at least prefetch + 1 (5)"), std::string::npos) << e;
  e = error_of("zero: [1, 2]\n");
  EXPECT_NE(e.find("expected a mapping"), std::string::npos) << e;
  e = error_of("zero: {stage: 1\n");
  EXPECT_NE(e.find("not valid YAML"), std::string::npos) << e;
  EXPECT_THROW(Config::from_yaml_file("/nonexistent/train.yaml"), Error);
}

TEST(Config, OptimizerStatesInBf16ForAdamAndLionOnly) {
  EXPECT_EQ(Config{}.optimizer.state_dtype, DType::f32);
  EXPECT_EQ(Config::from_yaml("optimizer: {type: adamw, state_dtype: bf16}\n").optimizer.state_dtype, DType::bf16);
  EXPECT_EQ(Config::from_yaml("optimizer: {type: lion, state_dtype: bfloat16}\n").optimizer.state_dtype, DType::bf16);
  std::string e = error_of("optimizer: {type: adamw, state_dtype: fp16}\n");
  EXPECT_NE(e.find("optimizer.state_dtype must be one of fp32, bf16, got 'fp16'"), std::string::npos) << e;
  e = error_of("optimizer:\n  type: sgd\n  momentum: 0.9\n  state_dtype: bf16\n");
  EXPECT_NE(e.find("train.yaml:4:16"), std::string::npos) << e;
  EXPECT_NE(e.find("SGD keeps its momentum in fp32"), std::string::npos) << e;
}

// The reference's YAML block (docs/config.md: every key with its default) is a valid config.
TEST(Config, TheDocumentedReferenceParses) {
  std::ifstream f(std::string(ZS_SOURCE_DIR) + "/docs/config.md");
  ASSERT_TRUE(f.good());
  std::string line, block;
  bool in = false;
  while (std::getline(f, line)) {
    if (line == "```yaml") {
      in = true;
    } else if (in && line == "```") {
      break;
    } else if (in) {
      block += line + "\n";
    }
  }
  ASSERT_GT(block.size(), 1000u) << "the YAML block of docs/config.md";
  const Config c = Config::from_yaml(block, "docs/config.md");
  const Config d;
  EXPECT_EQ(c.precision.loss_scale, d.precision.loss_scale);
  EXPECT_EQ(c.precision.initial_scale_power, d.precision.initial_scale_power);
  EXPECT_EQ(c.offload.buffer_count, d.offload.buffer_count);
  EXPECT_EQ(c.offload.param_buffer_count, d.offload.param_buffer_count);
  EXPECT_EQ(c.offload.grads, d.offload.grads);
  EXPECT_EQ(c.offload.grad_buffer_count, d.offload.grad_buffer_count);
}

// Offload combinations that are not configurations name the offload section's line and what to change.
TEST(Config, OffloadNeedsTheStagesItWorksWith) {
  std::string e = error_of("zero: {stage: 0}\noffload: {optimizer: cpu}\n");
  EXPECT_NE(e.find("train.yaml:2:10"), std::string::npos) << e;
  EXPECT_NE(e.find("offload.optimizer: cpu needs zero.stage 1, 2 or 3"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: cpu, params: cpu}\n");
  EXPECT_NE(e.find("offload.params: cpu needs zero.stage: 3"), std::string::npos) << e;
  e = error_of("zero: {stage: 3}\noffload: {params: cpu}\n");
  EXPECT_NE(e.find("and offload.optimizer: cpu"), std::string::npos) << e;
  e = error_of("zero: {stage: 3}\noffload: {optimizer: cpu, params: cpu, mode: delayed}\n");
  EXPECT_NE(e.find("mode: delayed works with offload.optimizer only"), std::string::npos) << e;
  const Config ok = Config::from_yaml("zero: {stage: 3}\noffload: {optimizer: cpu, params: cpu, pin_memory: false}\n");
  EXPECT_TRUE(ok.offload.optimizer_on_cpu() && ok.offload.params_offloaded() && !ok.offload.pin_memory);
  Config::Offload o;  // the tools' one-word form sets every field and reads back
  for (std::string_view c : Config::Offload::kChoices) {
    o.choose(c);
    EXPECT_EQ(o.choice(), c);
  }
  o.ratio = 0.5;
  o.choose("optimizer");  // keeps a configured share
  EXPECT_DOUBLE_EQ(o.ratio, 0.5);
  o.choose("delayed");  // which has none
  EXPECT_TRUE(o.optimizer_on_cpu() && !o.params_offloaded() && o.delayed());
  EXPECT_DOUBLE_EQ(o.ratio, 1.0);
  o.choose("none");
  EXPECT_TRUE(!o.optimizer_on_cpu() && !o.params_offloaded() && !o.delayed());
  EXPECT_THROW(o.choose("everything"), Error);
  // offload.ratio (DeepSpeed's offload_optimizer.ratio): a share in (0, 1], below 1 with the streaming
  // optimizer offload alone.
  EXPECT_DOUBLE_EQ(Config::from_yaml("offload: {optimizer: cpu, ratio: 0.25}\n").offload.ratio, 0.25);
  EXPECT_DOUBLE_EQ(Config::from_yaml("").offload.ratio, 1.0);
  e = error_of("zero: {stage: 3}\noffload: {optimizer: cpu, ratio: 0}\n");
  EXPECT_NE(e.find("train.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("offload.ratio must be in (0, 1], got 0"), std::string::npos) << e;
  EXPECT_NE(error_of("offload: {optimizer: cpu, ratio: 1.5}\n").find("must be in (0, 1]"), std::string::npos);
  e = error_of("offload: {ratio: 0.5}\n");
  EXPECT_NE(e.find("offload.ratio below 1 needs offload.optimizer: cpu"), std::string::npos) << e;
  e = error_of("offload: {optimizer: cpu, params: cpu, ratio: 0.5}\n");
  EXPECT_NE(e.find("use it with offload.params: none"), std::string::npos) << e;
  e = error_of("offload: {optimizer: cpu, mode: delayed, ratio: 0.5}\n");
  EXPECT_NE(e.find("offload.ratio below 1 works with offload.mode: streaming"), std::string::npos) << e;
  // The optimizer's state on disk (DeepSpeed's offload_optimizer: {device: nvme, nvme_path, buffer_count}).
  const Config nvme = Config::from_yaml(
      "zero: {stage: 3}\noffload: {optimizer: nvme, params: cpu, nvme_path: /local_nvme, buffer_count: 6}\n");
  EXPECT_TRUE(nvme.offload.optimizer_on_cpu() && nvme.offload.state_on_nvme() && nvme.offload.params_offloaded());
  EXPECT_EQ(nvme.offload.nvme_path, "/local_nvme");
  EXPECT_EQ(nvme.offload.buffer_count, 6);
  EXPECT_EQ(nvme.offload.choice(), "nvme+params");
  EXPECT_EQ(Config::from_yaml("").offload.buffer_count, 4);
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme}\n");
  EXPECT_NE(e.find("train.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("offload.optimizer: nvme needs offload.nvme_path"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, nvme_path: /x, buffer_count: 1}\n");
  EXPECT_NE(e.find("offload.buffer_count must be >= 2, got 1"), std::string::npos) << e;
  EXPECT_NE(error_of("zero: {stage: 0}\noffload: {optimizer: nvme, nvme_path: /x}\n")
                .find("offload.optimizer: nvme needs zero.stage"),
            std::string::npos);
  // The parameters on disk too (DeepSpeed's offload_param: {device: nvme, nvme_path, buffer_count}).
  const Config inf = Config::from_yaml(
      "zero: {stage: 3}\nprecision: {param: bf16}\noffload: {optimizer: cpu, params: nvme, nvme_path: /local_nvme, "
      "param_buffer_count: 3}\n");
  EXPECT_TRUE(inf.offload.params_on_nvme() && inf.offload.params_offloaded() && !inf.offload.state_on_nvme());
  EXPECT_EQ(inf.offload.param_buffer_count, 3);
  EXPECT_EQ(inf.offload.choice(), "optimizer+nvme-params");
  EXPECT_EQ(Config::from_yaml("").offload.param_buffer_count, 5);
  e = error_of("zero: {stage: 3}\nprecision: {param: bf16}\noffload: {optimizer: cpu, params: nvme}\n");
  EXPECT_NE(e.find("train.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("offload.params: nvme needs offload.nvme_path"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, params: nvme, nvme_path: /x}\n");
  EXPECT_NE(e.find("offload.params: nvme needs zero.stage: 3"), std::string::npos) << e;
  e = error_of("zero: {stage: 3}\noffload: {optimizer: cpu, params: nvme, nvme_path: /x}\n");
  EXPECT_NE(e.find("the parameters are the f32 master, which the CPU step keeps in host memory"), std::string::npos)
      << e;
  e = error_of("zero: {stage: 3}\noffload: {optimizer: nvme, params: nvme, nvme_path: /x, mode: delayed}\n");
  EXPECT_NE(e.find("with offload.params: nvme use mode: streaming"), std::string::npos) << e;
  e = error_of("zero: {stage: 3}\noffload: {optimizer: nvme, params: nvme, nvme_path: /x, param_buffer_count: 1}\n");
  EXPECT_NE(e.find("offload.param_buffer_count must be >= 2, got 1"), std::string::npos) << e;
  EXPECT_NO_THROW(Config::from_yaml("zero: {stage: 3}\noffload: {optimizer: nvme, params: nvme, nvme_path: /x}\n"));
  // The gradient shards on disk too (DeepSpeed swaps them with offload_optimizer: {device: nvme}).
  const Config grads = Config::from_yaml(
      "zero: {stage: 2}\noffload: {optimizer: nvme, grads: nvme, nvme_path: /x, grad_buffer_count: 3}\n");
  EXPECT_TRUE(grads.offload.grads_on_nvme() && grads.offload.state_on_nvme());
  EXPECT_EQ(grads.offload.grad_buffer_count, 3);
  EXPECT_EQ(grads.offload.choice(), "nvme+nvme-grads");
  EXPECT_EQ(Config::from_yaml("").offload.grads, "cpu");
  EXPECT_EQ(Config::from_yaml("").offload.grad_buffer_count, 4);
  e = error_of("zero: {stage: 2}\noffload: {optimizer: cpu, grads: nvme, nvme_path: /x}\n");
  EXPECT_NE(e.find("train.yaml:2:"), std::string::npos) << e;
  EXPECT_NE(e.find("offload.grads: nvme needs offload.optimizer: nvme and mode: streaming"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, grads: nvme, nvme_path: /x, mode: delayed}\n");
  EXPECT_NE(e.find("offload.grads: nvme needs offload.optimizer: nvme and mode: streaming"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, grads: nvme, nvme_path: /x, accumulate: host}\n");
  EXPECT_NE(e.find("offload.accumulate: host with offload.grads: nvme"), std::string::npos) << e;
  e = error_of("offload: {optimizer: cpu, accumulate: gpu}\n");
  EXPECT_NE(e.find("accumulate"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, grads: nvme, nvme_path: /x, grad_buffer_count: 1}\n");
  EXPECT_NE(e.find("offload.grad_buffer_count must be >= 2, got 1"), std::string::npos) << e;
  e = error_of("zero: {stage: 2}\noffload: {optimizer: nvme, grads: none, nvme_path: /x}\n");
  EXPECT_NE(e.find("offload.grads"), std::string::npos) << e;
  Config in_code;  // built in code, the engine refuses it with the same words (offload_problem)
  in_code.zero.stage = 0;
  in_code.offload.optimizer = "cpu";
  EXPECT_NE(offload_problem(in_code).find("needs zero.stage 1, 2 or 3"), std::string::npos);
}

// Found by fuzzing: a mapping used as a key made yaml-cpp throw its own exception past the checks.
TEST(Config, ComplexKeysAreLocatedErrors) {
  const std::string e = error_of("zero:\n  stage: 3\n  ? {a: 1}\n  : 2\n");
  EXPECT_NE(e.find("train.yaml:3:"), std::string::npos) << e;
  EXPECT_NE(e.find("a key in 'zero' must be a plain name, not a mapping"), std::string::npos) << e;
  const std::string seq = error_of("zero: [1, 2]\n");
  EXPECT_NE(seq.find("train.yaml:1:"), std::string::npos) << seq;
}

// zsrun --config names the job's file in ZS_CONFIG: from_job reads it, or keeps the caller's defaults.
TEST(Config, FromJobReadsTheFileZsrunNamed) {
  const std::string path = ::testing::TempDir() + "zs_job_config_test.yaml";
  std::ofstream(path) << "zero: {stage: 1, prefetch: 0}\n";
  zs::Config defaults;
  defaults.zero.stage = 2;
  unsetenv("ZS_CONFIG");
  EXPECT_EQ(zs::Config::job_path(), "");
  EXPECT_EQ(zs::Config::from_job(defaults).zero.stage, 2);
  setenv("ZS_CONFIG", path.c_str(), 1);
  EXPECT_EQ(zs::Config::job_path(), path);
  const zs::Config job = zs::Config::from_job(defaults);
  EXPECT_EQ(job.zero.stage, 1);
  EXPECT_EQ(job.zero.prefetch, 0);
  unsetenv("ZS_CONFIG");
  std::remove(path.c_str());
}

TEST(Schedule, WarmupThenCosineOrLinearToTheFloor) {
  Schedule s{ScheduleKind::cosine, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.lr(1.0, 1), 0.1);
  EXPECT_DOUBLE_EQ(s.lr(1.0, 10), 1.0);
  EXPECT_NEAR(s.lr(1.0, 60), 0.55, 1e-12);  // halfway: floor + (1 - floor) / 2
  EXPECT_NEAR(s.lr(1.0, 110), 0.1, 1e-12);
  EXPECT_NEAR(s.lr(1.0, 500), 0.1, 1e-12);
  Schedule lin{ScheduleKind::linear, 0, 100, 0.0};
  EXPECT_NEAR(lin.lr(2.0, 25), 1.5, 1e-12);
  Schedule c{};
  EXPECT_EQ(c.lr(3.0, 1000), 3.0);
}

}  // namespace
}  // namespace zs

#include "optim/loss_scaler.h"

namespace zs {
namespace {

TEST(LossScaler, HalvesOnOverflowAndGrowsAfterCleanWindows) {
  LossScaler s;
  s.window = 3;
  EXPECT_EQ(s.scale, 65536.0);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale, 131072.0);  // a clean window doubles it
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale, 65536.0);  // an overflow halves it and skips the step
  for (int i = 0; i < 3; ++i) s.update(false);
  EXPECT_EQ(s.scale, 65536.0);  // hysteresis 2: the first clean window after an overflow does not grow
  for (int i = 0; i < 3; ++i) s.update(false);
  EXPECT_EQ(s.scale, 131072.0);
  LossScaler fixed;
  fixed.fixed = true;
  fixed.scale = 128.0;
  EXPECT_TRUE(fixed.update(true));  // an overflow skips the step
  for (int i = 0; i < 5000; ++i) EXPECT_FALSE(fixed.update(false));
  EXPECT_EQ(fixed.scale, 128.0);  // and nothing changes it
  fixed.scale = fixed.min_scale;
  EXPECT_FALSE(fixed.at_minimum()) << "a fixed scale has no minimum to fail at";
  LossScaler low;
  low.scale = 1.5;
  EXPECT_FALSE(low.at_minimum());
  low.update(true);
  EXPECT_EQ(low.scale, 1.0);  // never below min_scale
  EXPECT_TRUE(low.at_minimum());
}

}  // namespace
}  // namespace zs
