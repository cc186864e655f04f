// The engine on CUDA + NCCL at world 1 against the same run on CPU + Gloo (label gpu): the kernels are
// bit-identical twins and a one-rank reduction changes nothing, so the parameters must agree to f32 rounding.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/checkpoint.h"
#include "tests/dist/engine_harness.h"
#include "tests/gpu/gpu_test.h"

namespace zs {
namespace {

using namespace test;

TEST(EngineCuda, MatchesTheCpuEngineAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  for (const Case& c :
       {Case{0, DType::f32, 0, 1, 0.0f}, Case{3, DType::f32, 2, 1, 0.0f}, Case{3, DType::bf16, 2, 3, 0.0f},
        Case{2, DType::bf16, 2, 1, 0.0f, kernels::Optimizer::adamw, false, 0, false, true},
        Case{3, DType::bf16, 2, 3, 0.0f, kernels::Optimizer::adamw, false, 0, false, false, true}}) {
    Engine on_cpu(make_config(c), *cpu_pg.world);
    Engine on_gpu(make_config(c), *gpu_pg.world);
    ASSERT_TRUE(on_gpu.device().is_cuda());
    const Trajectory a = train(c, on_cpu, 10), b = train(c, on_gpu, 10);
    EXPECT_LE(worst_rms_error(b.params, a.params), 1e-6) << name(c, 1);
    for (std::size_t k = 0; k < a.losses.size(); ++k) EXPECT_NEAR(b.losses[k], a.losses[k], 1e-5 * a.losses[k]) << k;
  }
}

// Offload on CUDA: the pinned pool, the copy streams and the CPU step against the same run on the CPU
// build's pipeline (whose bit-identity to the device optimizer the dist tests check) and, in streaming
// mode, against the CUDA engine's own device optimizer (twin kernels; only the norm's summation order
// differs, and these cases do not clip).
TEST(EngineCuda, OffloadMatchesTheDeviceOptimizerAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  using O = kernels::Optimizer;
  for (const Case& c :
       {Case{1, DType::f32, 0, 1, 0.0f, O::adamw, false, 1}, Case{2, DType::bf16, 2, 1, 0.0f, O::adamw, false, 1},
        Case{3, DType::bf16, 2, 3, 0.0f, O::adamw, false, 2}, Case{3, DType::f32, 2, 1, 0.0f, O::adamw, false, 1, true},
        Case{2, DType::f32, 0, 4, 0.0f, O::adamw, false, 1, true}}) {
    Engine on_cpu(make_config(c), *cpu_pg.world);
    Engine on_gpu(make_config(c), *gpu_pg.world);
    ASSERT_TRUE(on_gpu.device().is_cuda());
    const Trajectory a = train(c, on_cpu, 10), b = train(c, on_gpu, 10);
    EXPECT_LE(worst_rms_error(b.params, a.params), 1e-6) << name(c, 1) << " vs the CPU build";
    const MemoryReport m = on_gpu.memory();
    EXPECT_EQ(m.on_device[static_cast<std::size_t>(MemCategory::optim_state)].current, 0) << name(c, 1);
    EXPECT_GT(m.on_host[static_cast<std::size_t>(MemCategory::optim_state)].current, 0) << name(c, 1);
    if (c.accum > 1) {
      // The micro-batches were added up on the host (each shard copied down as it landed); added up on the
      // GPU instead (CUDA's add, one copy) the f32 sums are the same, and without clipping so is the update.
      Config cfg = make_config(c);
      cfg.offload.accumulate = "device";
      Engine on_device(cfg, *gpu_pg.world);
      EXPECT_EQ(train(c, on_device, 10).params, b.params) << name(c, 1) << ": accumulated on the device";
    }
    if (c.delayed) continue;
    Case device = c;
    device.offload = 0;
    Engine plain(make_config(device), *gpu_pg.world);
    const Trajectory d = train(device, plain, 10);
    EXPECT_LE(worst_rms_error(b.params, d.params), 1e-6) << name(c, 1) << " vs the device optimizer";
  }
}

// Partial offload (offload.ratio) on CUDA: the first units updated by the device's kernels, the last ones by
// the CPU step, in one step; against the CPU build's run of the same split and the CUDA device optimizer
// (without clipping, as above: the norm's summation order differs between the builds).
TEST(EngineCuda, PartialOffloadMatchesTheDeviceOptimizerAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  for (Case c : {Case{1, DType::f32, 0, 1, 0.0f}, Case{3, DType::bf16, 2, 1, 0.0f}, Case{2, DType::f32, 2, 3, 0.0f}}) {
    Engine plain(make_config(c), *gpu_pg.world);
    const Trajectory d = train(c, plain, 10);
    c.offload = 1;
    Config cfg = make_config(c);
    cfg.offload.ratio = 0.5;
    Engine on_cpu(cfg, *cpu_pg.world);
    Engine on_gpu(cfg, *gpu_pg.world);
    ASSERT_TRUE(on_gpu.device().is_cuda());
    const Trajectory a = train(c, on_cpu, 10), b = train(c, on_gpu, 10);
    EXPECT_LE(worst_rms_error(b.params, a.params), 1e-6) << name(c, 1) << ", ratio 0.5, vs the CPU build";
    EXPECT_LE(worst_rms_error(b.params, d.params), 1e-6) << name(c, 1) << ", ratio 0.5, vs the device optimizer";
    const MemoryReport m = on_gpu.memory();
    EXPECT_GT(m.on_device[static_cast<std::size_t>(MemCategory::optim_state)].current, 0) << name(c, 1);
    EXPECT_GT(m.on_host[static_cast<std::size_t>(MemCategory::optim_state)].current, 0) << name(c, 1);
  }
}

// The optimizer's state on disk (offload.optimizer: nvme) on CUDA: the same CPU step as with the state in
// pinned memory, only read from the file ahead of each update, so bit-identical to it; a checkpoint saved
// from the disk and loaded by an engine with the state in memory trains on bit-identical too.
TEST(EngineCuda, StateOnDiskMatchesTheStateInMemoryAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  using O = kernels::Optimizer;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("zs_gpu_nvme_{}", getpid());
  for (const Case& c :
       {Case{2, DType::bf16, 2, 1, 1.0f, O::adamw, false, 1}, Case{3, DType::bf16, 2, 1, 0.0f, O::adamw, false, 2}}) {
    std::filesystem::remove_all(dir);
    Engine memory(make_config(c), *gpu_pg.world);
    const Trajectory want = train(c, memory, 15);
    Engine disk(on_nvme(make_config(c)), *gpu_pg.world);
    ASSERT_TRUE(disk.device().is_cuda());
    const Trajectory got = train(c, disk, 10);
    disk.save_checkpoint(dir.string());
    Engine resumed(make_config(c), *gpu_pg.world);
    for (auto& [n, tensors] : model_units()) resumed.add_unit(n, tensors);
    resumed.load_checkpoint(dir.string());
    const Trajectory rest = train(c, resumed, 5);
    EXPECT_EQ(rest.params, want.params) << name(c, 1) << ": saved from the disk, resumed in memory";
    EXPECT_EQ(got.losses, std::vector<double>(want.losses.begin(), want.losses.begin() + 10)) << name(c, 1);
  }
  std::filesystem::remove_all(dir);
}

// The parameters on disk (offload.params: nvme) on CUDA: the gathers upload each unit's shard from a pinned
// host slot (read from the file when it is not in one), the CPU step writes it through a slot; 2 slots for
// 4 units. Bit-identical to the parameters in pinned memory, with clipping and without (the early update),
// with the optimizer's state in memory and on disk.
TEST(EngineCuda, ParamsOnDiskMatchParamsInMemoryAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  using O = kernels::Optimizer;
  for (const Case& c :
       {Case{3, DType::bf16, 2, 1, 1.0f, O::adamw, false, 2}, Case{3, DType::bf16, 2, 1, 0.0f, O::adamw, false, 2}}) {
    Engine memory(make_config(c), *gpu_pg.world);
    const Trajectory want = train(c, memory, 10);
    for (bool state_on_disk : {false, true}) {
      Engine disk(params_on_nvme(state_on_disk ? on_nvme(make_config(c)) : make_config(c)), *gpu_pg.world);
      ASSERT_TRUE(disk.device().is_cuda());
      const Trajectory got = train(c, disk, 10);
      const std::string what = fmt::format("{}, the state {}", name(c, 1), state_on_disk ? "on disk" : "in memory");
      EXPECT_EQ(got.losses, want.losses) << what;
      EXPECT_EQ(got.params, want.params) << what;
    }
  }
}

// The gradient shards on disk (offload.grads: nvme) on CUDA: each reduced shard is copied from the device
// into a pinned host slot and written to the file behind; the CPU step takes it back from the slot or the
// file; 2 slots for 4 units. Bit-identical to the gradients in pinned memory (the state on disk in both), at
// stages 2 and 3, with the parameters on disk too.
TEST(EngineCuda, GradsOnDiskMatchGradsInMemoryAtWorldOne) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  for (const Case& c : {Case{2, DType::bf16, 2, 1, 1.0f, kernels::Optimizer::adamw, false, 1},
                        Case{3, DType::bf16, 2, 1, 1.0f, kernels::Optimizer::adamw, false, 1}}) {
    Engine memory(on_nvme(make_config(c)), *gpu_pg.world);
    const Trajectory want = train(c, memory, 10);
    Config cfg = grads_on_nvme(on_nvme(make_config(c)));
    if (c.stage == 3) cfg = params_on_nvme(cfg);
    Engine disk(cfg, *gpu_pg.world);
    ASSERT_TRUE(disk.device().is_cuda());
    const Trajectory got = train(c, disk, 10);
    EXPECT_EQ(got.losses, want.losses) << name(c, 1);
    EXPECT_EQ(got.params, want.params) << name(c, 1);
  }
}

// checkpoint.async on CUDA: the staging copy comes from device memory into pinned host memory, and the files
// are the bytes a synchronous save writes, though training changes the device's states while they are written.
TEST(EngineCuda, AsyncCheckpointWritesWhatASynchronousSaveWrites) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = cpu_and_gpu_groups();
  const std::filesystem::path root = std::filesystem::temp_directory_path() / fmt::format("zs_gpu_ckpt_{}", getpid());
  auto bytes = [](const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  for (const Case& c :
       {Case{3, DType::bf16, 2, 1, 0.0f}, Case{2, DType::f32, 2, 1, 0.0f, kernels::Optimizer::adamw, false, 1}}) {
    std::filesystem::remove_all(root);
    {
      Engine e(make_config(c), *gpu_pg.world);
      train(c, e, 5);
      e.save_checkpoint((root / "sync").string());
    }
    Config cfg = make_config(c);
    cfg.checkpoint.async = true;
    Engine e(cfg, *gpu_pg.world);
    ASSERT_TRUE(e.device().is_cuda());
    train(c, e, 5);
    e.save_checkpoint((root / "async").string());
    train(c, e, 2);
    e.wait_checkpoint();
    const std::string step = ckpt::step_dir_name(5);
    for (const char* f : {"manifest.json", "rank-00000.safetensors"}) {
      const std::string a = bytes(root / "sync" / step / f), b = bytes(root / "async" / step / f);
      EXPECT_FALSE(a.empty()) << f;
      EXPECT_TRUE(a == b) << f << " differs, " << name(c, 1);
    }
  }
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace zs
