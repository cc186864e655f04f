// Memory planning's pure choices, on their own (the engine's ledger against the whole plan is in
// tests/dist/test_engine.cpp).
#include <gtest/gtest.h>

#include "runtime/memory_plan.h"

namespace zs {
namespace {

Config offload_ratio(double ratio) {
  Config cfg;
  cfg.offload.optimizer = "cpu";
  cfg.offload.ratio = ratio;
  return cfg;
}

// offload.ratio: the fewest last units holding at least that share of the trainable elements go to the host.
TEST(MemoryPlan, OffloadRatioTakesTheFewestLastUnitsThatReachIt) {
  const std::vector<int64_t> units = {100, 300, 200, 400};  // 1000 elements
  using V = std::vector<bool>;
  EXPECT_EQ(offloaded_units(units, Config{}), V(4, false));                                 // no offload
  EXPECT_EQ(offloaded_units(units, offload_ratio(1.0)), V(4, true));                        // all of it
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.4)), (V{false, false, false, true}));    // 400 >= 400
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.41)), (V{false, false, true, true}));    // 600 >= 410
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.6)), (V{false, false, true, true}));     // 600 >= 600
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.61)), (V{false, true, true, true}));     // 900
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.95)), (V{true, true, true, true}));      // 1000
  EXPECT_EQ(offloaded_units(units, offload_ratio(0.001)), (V{false, false, false, true}));  // at least one unit
  // A last unit without trainable elements (frozen) holds no optimizer: the one before it goes too.
  EXPECT_EQ(offloaded_units(std::vector<int64_t>{500, 500, 0}, offload_ratio(0.1)), (V{false, true, true}));
  EXPECT_TRUE(offloaded_units(std::vector<int64_t>{}, offload_ratio(0.5)).empty());
}

// Accumulation at stages 2-3 keeps this rank's shard of the gradients (the micro-batches add up there) and
// the pool of two full-unit buffers the app writes into, as without accumulation; with
// reduce_every_micro_batch false (FSDP's no_sync) every unit's full gradient instead, and no pool. An
// offloaded unit adds its micro-batches' shards on the device before the copy to the host. Bytes by hand:
// units of 4096 + 64 and 8192 + 128 f32 elements at world 4 (padded to 4160 and 8320; shards 1040, 2080).
TEST(MemoryPlan, AccumulationKeepsTheShardUnlessNoSync) {
  const std::vector<std::vector<TensorSpec>> units = {{{"w", Shape{64, 64}}, {"b", Shape{64}, true, false}},
                                                      {{"w", Shape{128, 64}}, {"b", Shape{128}, true, false}}};
  const auto g = static_cast<std::size_t>(MemCategory::grads);
  for (int stage : {2, 3}) {
    Config cfg;
    cfg.zero.stage = stage;
    const int64_t one_step = plan_memory(units, cfg, 4, 0, false).device[g];
    EXPECT_EQ(one_step, 4 * (1040 + 2080) + 2 * 4 * 8320) << "stage " << stage;
    cfg.zero.grad_accumulation = 4;
    EXPECT_EQ(plan_memory(units, cfg, 4, 0, false).device[g], one_step) << "stage " << stage;
    cfg.zero.reduce_every_micro_batch = false;
    EXPECT_EQ(plan_memory(units, cfg, 4, 0, false).device[g], 4 * (4160 + 8320)) << "stage " << stage;
  }
  Config cfg;
  cfg.offload.optimizer = "cpu";
  EXPECT_EQ(plan_memory(units, cfg, 4, 0, false).device[g], 2 * 4 * 8320);  // the shards go to the host
  cfg.zero.grad_accumulation = 2;
  // Added up on the host (offload.accumulate: auto): still no shard on the device; two staging buffers of
  // the largest shard on the host. On the device instead, the shards come back.
  const MemoryPlan on_host = plan_memory(units, cfg, 4, 0, false);
  EXPECT_EQ(on_host.device[g], 2 * 4 * 8320);
  EXPECT_EQ(on_host.host[static_cast<std::size_t>(MemCategory::offload_staging)], 2 * 4 * 2080);
  cfg.offload.accumulate = "device";
  const MemoryPlan on_device = plan_memory(units, cfg, 4, 0, false);
  EXPECT_EQ(on_device.device[g], 4 * (1040 + 2080) + 2 * 4 * 8320);
  EXPECT_EQ(on_device.host[static_cast<std::size_t>(MemCategory::offload_staging)], 0);
  EXPECT_EQ(on_host.host_total() - on_device.host_total(), 2 * 4 * 2080);
}

// Below ratio 1 the optimizer state splits between the device and the host, and the two add up to the
// whole offload's host bytes (f32 master, m and v: 12 B per shard element, whatever the split).
TEST(MemoryPlan, PartialOffloadSplitsTheOptimizerState) {
  std::vector<std::vector<TensorSpec>> units;
  for (int64_t rows : {64, 128, 96, 256}) units.push_back({{"w", Shape{rows, 64}}, {"b", Shape{rows}, true, false}});
  Config cfg = offload_ratio(1.0);
  cfg.zero.stage = 3;
  cfg.precision.param = DType::bf16;
  const MemoryPlan all = plan_memory(units, cfg, 2, 0, false);
  cfg.offload.ratio = 0.5;
  const MemoryPlan half = plan_memory(units, cfg, 2, 0, false);
  const auto os = static_cast<std::size_t>(MemCategory::optim_state),
             ms = static_cast<std::size_t>(MemCategory::master);
  EXPECT_EQ(all.device[os] + all.device[ms], 0);
  EXPECT_GT(half.device[os], 0);
  EXPECT_GT(half.host[os], 0);
  EXPECT_EQ(half.device[os] + half.host[os], all.host[os]);
  EXPECT_EQ(half.device[ms] + half.host[ms], all.host[ms]);
  // The last unit alone (256 x 64 + 256 of 36 928 elements) is below half: the last two go to the host.
  const std::vector<bool> host = offloaded_units(std::vector<int64_t>{64 * 65, 128 * 65, 96 * 65, 256 * 65}, cfg);
  EXPECT_EQ(host, (std::vector<bool>{false, false, true, true}));
}

// offload.optimizer: nvme: the master, m and v move from host memory to the file, each part 4 KiB aligned
// (12 B per shard element and the alignment), and the host keeps buffer_count buffers of the largest
// unit's; with f32 compute the host also keeps the f32 parameters the CPU step writes (the master was them).
TEST(MemoryPlan, StateOnDiskKeepsBuffersOnTheHost) {
  std::vector<std::vector<TensorSpec>> units;
  for (int64_t rows : {64, 128, 96, 256}) units.push_back({{"w", Shape{rows, 64}}, {"b", Shape{rows}, true, false}});
  for (DType param : {DType::bf16, DType::f32}) {
    Config cfg = offload_ratio(1.0);
    cfg.zero.stage = 3;
    cfg.precision.param = param;
    const MemoryPlan memory = plan_memory(units, cfg, 2, 0, false);
    cfg.offload.optimizer = "nvme";
    cfg.offload.buffer_count = 3;
    const MemoryPlan disk = plan_memory(units, cfg, 2, 0, false);
    const auto os = static_cast<std::size_t>(MemCategory::optim_state),
               ms = static_cast<std::size_t>(MemCategory::master),
               st = static_cast<std::size_t>(MemCategory::offload_staging);
    EXPECT_EQ(memory.disk, 0);
    EXPECT_EQ(disk.host[ms], 0);
    EXPECT_EQ(disk.device, memory.device);
    int64_t file = 0;  // each unit's shard: (rows x 65) / 2 elements, 3 parts of 4 B each rounded up to 4 KiB
    for (int64_t rows : {64, 128, 96, 256}) file += 3 * offload::swap_aligned(rows * 65 / 2 * 4);
    EXPECT_EQ(disk.disk, file);
    EXPECT_EQ(disk.host[os], 3 * 3 * offload::swap_aligned(256 * 65 / 2 * 4) + 4096);
    // f32 compute: the CPU step's f32 output on the host, as large as the master it replaces.
    EXPECT_EQ(disk.host[st] - memory.host[st], param == DType::f32 ? memory.host[ms] : 0) << dtype_name(param);
  }
}

// The parameters on disk (offload.params: nvme) take the parameter shards out of host memory and put the
// slots in their place; the file holds each unit's shard in the compute dtype, rounded up to 4 KiB; the
// device and the optimizer's side are as with the parameters in host memory.
TEST(MemoryPlan, ParamsOnDiskKeepSlotsOnTheHost) {
  std::vector<std::vector<TensorSpec>> units;
  for (int64_t rows : {64, 128, 96, 256}) units.push_back({{"w", Shape{rows, 64}}, {"b", Shape{rows}, true, false}});
  for (const char* optimizer : {"cpu", "nvme"}) {
    Config cfg = offload_ratio(1.0);
    cfg.zero.stage = 3;
    cfg.precision.param = DType::bf16;
    cfg.offload.optimizer = optimizer;
    cfg.offload.params = "cpu";
    const MemoryPlan memory = plan_memory(units, cfg, 2, 0, false);
    cfg.offload.params = "nvme";
    cfg.offload.param_buffer_count = 3;
    const MemoryPlan disk = plan_memory(units, cfg, 2, 0, false);
    const auto ps = static_cast<std::size_t>(MemCategory::params);
    int64_t file = 0, shards = 0;  // each unit's shard: (rows x 65) / 2 elements of 2 B
    for (int64_t rows : {64, 128, 96, 256}) {
      file += offload::swap_aligned(rows * 65 / 2 * 2);
      shards += rows * 65 / 2 * 2;
    }
    EXPECT_EQ(disk.disk - memory.disk, file) << optimizer;
    EXPECT_EQ(memory.host[ps], shards) << optimizer;
    EXPECT_EQ(disk.host[ps], 3 * offload::swap_aligned(256 * 65 / 2 * 2) + 4096) << optimizer;
    EXPECT_EQ(disk.device, memory.device) << optimizer;
    CategoryBytes rest_memory = memory.host, rest_disk = disk.host;
    rest_memory[ps] = rest_disk[ps] = 0;
    EXPECT_EQ(rest_disk, rest_memory) << optimizer;
  }
}

// The gradient shards on disk (offload.grads: nvme) take the offloaded units' reduced shards out of host
// memory and put the slots in their place; the file holds each unit's shard in the reduce dtype, rounded up
// to 4 KiB; the device, the state's buffers and the parameters are as before. With offload.ratio, only the
// offloaded units' shards.
TEST(MemoryPlan, GradsOnDiskKeepSlotsOnTheHost) {
  std::vector<std::vector<TensorSpec>> units;
  for (int64_t rows : {64, 128, 96, 256}) units.push_back({{"w", Shape{rows, 64}}, {"b", Shape{rows}, true, false}});
  for (double ratio : {1.0, 0.5}) {
    Config cfg = offload_ratio(ratio);
    cfg.zero.stage = 2;
    cfg.offload.optimizer = "nvme";
    const MemoryPlan memory = plan_memory(units, cfg, 2, 0, false);
    cfg.offload.grads = "nvme";
    cfg.offload.grad_buffer_count = 3;
    const MemoryPlan disk = plan_memory(units, cfg, 2, 0, false);
    const auto gs = static_cast<std::size_t>(MemCategory::grads);
    // Each unit's f32 shard: (rows x 65) / 2 elements of 4 B. Ratio 0.5 offloads the last two units (256
    // rows hold 47 % of the 544: the fewest last units with at least half the elements).
    int64_t file = 0, shards = 0;
    const std::vector<int64_t> offloaded =
        ratio == 1.0 ? std::vector<int64_t>{64, 128, 96, 256} : std::vector<int64_t>{96, 256};
    for (int64_t rows : offloaded) {
      file += offload::swap_aligned(rows * 65 / 2 * 4);
      shards += rows * 65 / 2 * 4;
    }
    EXPECT_EQ(disk.disk - memory.disk, file) << ratio;
    EXPECT_EQ(memory.host[gs], shards) << ratio;
    EXPECT_EQ(disk.host[gs], 3 * offload::swap_aligned(256 * 65 / 2 * 4) + 4096) << ratio;
    EXPECT_EQ(disk.device, memory.device) << ratio;
    CategoryBytes rest_memory = memory.host, rest_disk = disk.host;
    rest_memory[gs] = rest_disk[gs] = 0;
    EXPECT_EQ(rest_disk, rest_memory) << ratio;
  }
}

}  // namespace
}  // namespace zs
