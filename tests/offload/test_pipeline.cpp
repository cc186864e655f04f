// The offload pipeline on its own (CPU build: the "device" is a separate host buffer and the copies run on
// worker threads): once update_early is called, every downloaded shard is updated and uploaded without
// update(), exactly as the optimizer kernel updates it in place; finish_early takes the units the CPU has
// not started yet in the next forward's order, each still updated once.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/stream.h"
#include "kernels/kernels.h"
#include "offload/pipeline.h"
#include "offload/state_swap.h"

namespace zs {
namespace {

// One unit's host state and its device copies, with values that differ per unit and element.
struct UnitData {
  explicit UnitData(int64_t n, int seed)
      : master(static_cast<std::size_t>(n)),
        m(static_cast<std::size_t>(n), 0.0f),
        v(static_cast<std::size_t>(n), 0.0f),
        host_grads(static_cast<std::size_t>(n)),
        host_params(static_cast<std::size_t>(n)),
        device_grads(static_cast<std::size_t>(n)),
        device_params(static_cast<std::size_t>(n), 0) {
    for (std::size_t e = 0; e < master.size(); ++e) {
      master[e] = std::sin(0.37f * static_cast<float>(e) + static_cast<float>(seed));
      device_grads[e] = std::cos(0.11f * static_cast<float>(e) * static_cast<float>(seed + 1));
    }
  }
  offload::UnitShard shard() {
    offload::UnitShard s;
    s.n = static_cast<int64_t>(master.size());
    s.master = master.data();
    s.m = m.data();
    s.v = v.data();
    s.grads[0] = host_grads.data();
    s.host_params = host_params.data();
    s.device_params = device_params.data();
    return s;
  }
  std::vector<float> master, m, v, host_grads;
  std::vector<uint16_t> host_params;  // bf16
  std::vector<float> device_grads;
  std::vector<uint16_t> device_params;  // bf16, the "device" copy the upload writes
};

kernels::OptimizerHyper adamw() {
  kernels::OptimizerHyper h;
  h.lr = 1e-2f;
  h.weight_decay = 0.1f;
  h.step = 3;
  return h;
}

// The oracle: the optimizer kernel run directly on a copy of the unit's state, and the bf16 cast of the
// result (what the pipeline's fused update writes and uploads).
UnitData updated(UnitData u, float grad_scale) {
  kernels::UpdateArgs a;
  a.n = static_cast<int64_t>(u.master.size());
  a.param = u.master.data();
  a.grad = u.device_grads.data();
  a.grad_dtype = DType::f32;
  a.grad_scale = grad_scale;
  a.state1 = u.m.data();
  a.state2 = u.v.data();
  a.param_out = u.device_params.data();
  a.param_out_dtype = DType::bf16;
  kernels::optimizer_update(Device::cpu(), adamw(), a);
  return u;
}

std::vector<offload::UnitShard> shards_of(std::vector<UnitData>& units) {
  std::vector<offload::UnitShard> shards;
  for (UnitData& u : units) shards.push_back(u.shard());
  return shards;
}

TEST(OffloadPipeline, EarlyUpdateRunsAsEachShardLandsWithoutTheStep) {
  std::vector<UnitData> units{UnitData(1000, 1), UnitData(37, 2), UnitData(4099, 3)};
  std::vector<UnitData> want;
  for (const UnitData& u : units) want.push_back(updated(u, 0.5f));
  offload::Pipeline p(Device::cpu(), DType::bf16, DType::f32, DType::f32, /*delayed=*/false, shards_of(units));
  for (int step = 0; step < 2; ++step) {  // the second step proves the first left the pipeline ready
    p.update_early(adamw(), 0.5f);
    for (int u : {2, 0, 1}) p.download(u, units[static_cast<std::size_t>(u)].device_grads.data(), nullptr);
    p.drain();  // no update() call: the units are done as they land
    EXPECT_EQ(p.updated_order(), (std::vector<int>{2, 0, 1})) << "step " << step;
    for (std::size_t u = 0; u < units.size(); ++u) {
      EXPECT_EQ(units[u].master, want[u].master) << "step " << step << " unit " << u;
      EXPECT_EQ(units[u].v, want[u].v) << "step " << step << " unit " << u;
      EXPECT_EQ(units[u].device_params, want[u].device_params) << "step " << step << " unit " << u;
      want[u] = updated(want[u], 0.5f);
    }
  }
}

// Accumulation on the host: three micro-batches per unit land (first, add, last) through the two staging
// buffers, in the backward's order; the host shard is their f32 sum in that order, its sum of squares is
// the CPU kernel's over that sum, and the early update (started before the last micro-batch) updates each
// unit with the sum, once its last add is done. A download that adds without staging buffers is refused.
TEST(OffloadPipeline, MicroBatchesAddUpOnTheHostBeforeTheUpdate) {
  std::vector<UnitData> units{UnitData(1000, 1), UnitData(37, 2), UnitData(4099, 3)};
  constexpr int kMicro = 3;
  std::vector<std::vector<std::vector<float>>> micro(units.size());  // [unit][micro-batch]: the device's shards
  std::vector<UnitData> want = units;
  int64_t largest = 0;
  for (std::size_t u = 0; u < units.size(); ++u) {
    largest = std::max<int64_t>(largest, static_cast<int64_t>(units[u].master.size()));
    std::vector<float>& sum = want[u].device_grads;
    for (int k = 0; k < kMicro; ++k) {
      std::vector<float> g = units[u].device_grads;
      for (std::size_t e = 0; e < g.size(); ++e)
        g[e] *= 1.0f + 0.5f * static_cast<float>(k) + 1e-3f * static_cast<float>(e % 7);
      for (std::size_t e = 0; e < g.size(); ++e) sum[e] = k == 0 ? g[e] : sum[e] + g[e];
      micro[u].push_back(std::move(g));
    }
    want[u] = updated(want[u], 0.5f);
  }
  {
    offload::Pipeline plain(Device::cpu(), DType::bf16, DType::f32, DType::f32, false, shards_of(units));
    EXPECT_THROW(plain.download(0, micro[0][1].data(), nullptr, offload::Landing::add), Error);
  }
  std::vector<std::vector<float>> staging(offload::kAccumulationStaging,
                                          std::vector<float>(static_cast<std::size_t>(largest)));
  offload::Pipeline p(Device::cpu(), DType::bf16, DType::f32, DType::f32, /*delayed=*/false, shards_of(units), nullptr,
                      nullptr, nullptr, {staging[0].data(), staging[1].data()});
  for (int k = 0; k < kMicro; ++k) {
    if (k == kMicro - 1) p.update_early(adamw(), 0.5f);
    const offload::Landing landing = k == 0            ? offload::Landing::first
                                     : k == kMicro - 1 ? offload::Landing::last
                                                       : offload::Landing::add;
    for (int u : {2, 0, 1})
      p.download(u, micro[static_cast<std::size_t>(u)][static_cast<std::size_t>(k)].data(), nullptr, landing);
  }
  for (std::size_t u = 0; u < units.size(); ++u) {
    float sq = 0.0f;
    kernels::sum_squares(Device::cpu(),
                         TensorView::flat(want[u].device_grads.data(), DType::f32,
                                          static_cast<int64_t>(units[u].master.size()), Device::cpu()),
                         &sq);
    EXPECT_EQ(p.host_sum_squares(static_cast<int>(u)), sq) << "unit " << u;
  }
  p.drain();
  EXPECT_EQ(p.updated_order(), (std::vector<int>{2, 0, 1}));
  for (std::size_t u = 0; u < units.size(); ++u) {
    EXPECT_EQ(units[u].host_grads, want[u].device_grads) << "unit " << u << ": the micro-batches' sum";
    EXPECT_EQ(units[u].master, want[u].master) << "unit " << u;
    EXPECT_EQ(units[u].device_params, want[u].device_params) << "unit " << u;
  }
  const offload::Timing t = p.take_timing();
  EXPECT_GT(t.accumulate_ms, 0.0);
  EXPECT_EQ(t.updates, 3);
}

// Streaming with the norm known (the engine sums each shard on the device): update() after the downloads,
// each unit's update waiting for its own shard.
TEST(OffloadPipeline, StreamingUpdatesEachUnitOnceItsShardLanded) {
  std::vector<UnitData> units{UnitData(1000, 1), UnitData(37, 2), UnitData(4099, 3)};
  std::vector<UnitData> want;
  for (const UnitData& u : units) want.push_back(updated(u, 0.25f));
  offload::Pipeline p(Device::cpu(), DType::bf16, DType::f32, DType::f32, /*delayed=*/false, shards_of(units));
  for (int u : {2, 0, 1}) p.download(u, units[static_cast<std::size_t>(u)].device_grads.data(), nullptr);
  const std::vector<int> order{0, 1, 2};
  p.update(adamw(), 0.25f, order);  // at once: the downloads may still be in flight
  EXPECT_THROW(p.finish_early(order), Error);
  p.drain();
  EXPECT_EQ(p.updated_order(), order);
  for (std::size_t u = 0; u < units.size(); ++u) {
    EXPECT_EQ(units[u].master, want[u].master) << "unit " << u;
    EXPECT_EQ(units[u].device_params, want[u].device_params) << "unit " << u;
  }
}

// The backward is over while the CPU is behind (here: the shards are held back until finish_early): the
// CPU finishes the unit it is on, if any, then takes the rest in the order given, not in the order they
// landed, so the next forward's first unit is not the last one ready. Every unit is updated once.
TEST(OffloadPipeline, FinishEarlyTakesTheRestInTheNextForwardsOrder) {
  std::vector<UnitData> units{UnitData(100, 1), UnitData(37, 2), UnitData(64, 3), UnitData(5, 4)};
  std::vector<UnitData> want;
  for (const UnitData& u : units) want.push_back(updated(u, 1.0f));
  offload::Pipeline p(Device::cpu(), DType::bf16, DType::f32, DType::f32, /*delayed=*/false, shards_of(units));
  std::unique_ptr<Stream> gate = make_stream(Device::cpu());
  std::unique_ptr<Event> open = make_event(Device::cpu());
  std::promise<void> release;
  gate->submit([f = release.get_future().share()] { f.wait(); });
  gate->record(*open);
  p.update_early(adamw(), 1.0f);
  for (int u : {3, 2, 1, 0}) p.download(u, units[static_cast<std::size_t>(u)].device_grads.data(), open.get());
  const std::vector<int> forward{0, 1, 2, 3};
  p.finish_early(forward);
  release.set_value();
  p.drain();
  const std::vector<int>& seen = p.updated_order();
  // Whether the CPU had claimed unit 3 (the first to land) before finish_early is up to the threads.
  EXPECT_TRUE(seen == std::vector<int>({0, 1, 2, 3}) || seen == std::vector<int>({3, 0, 1, 2}))
      << ::testing::PrintToString(seen);
  for (std::size_t u = 0; u < units.size(); ++u) {
    EXPECT_EQ(units[u].master, want[u].master) << "unit " << u;
    EXPECT_EQ(units[u].device_params, want[u].device_params) << "unit " << u;
  }
}

// take_timing: each update once with the bytes it moved (30 B per element here: f32 master, gradient, m and
// v, and the bf16 copy), and the host's time blocked in wait_params while the CPU had not updated the unit
// (its shard held back 200 ms); then zeros until more happens.
TEST(OffloadPipeline, TimingCountsTheUpdatesTheirBytesAndTheHostsWait) {
  std::vector<UnitData> units{UnitData(1000, 1), UnitData(37, 2)};
  offload::Pipeline p(Device::cpu(), DType::bf16, DType::f32, DType::f32, /*delayed=*/false, shards_of(units));
  std::unique_ptr<Stream> gate = make_stream(Device::cpu()), compute = make_stream(Device::cpu());
  std::unique_ptr<Event> open = make_event(Device::cpu());
  std::promise<void> release;
  gate->submit([f = release.get_future().share()] { f.wait(); });
  gate->record(*open);
  for (int u : {1, 0}) p.download(u, units[static_cast<std::size_t>(u)].device_grads.data(), open.get());
  p.update(adamw(), 1.0f, std::vector<int>{0, 1});
  std::thread later([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    release.set_value();
  });
  p.wait_params(0, *compute);  // blocks until the shard is released and unit 0 updated
  later.join();
  p.drain();
  const offload::Timing t = p.take_timing();
  EXPECT_EQ(t.updates, 2);
  EXPECT_EQ(t.update_bytes, (1000.0 + 37.0) * 30.0);
  EXPECT_GT(t.update_ms, 0.0);
  EXPECT_GE(t.wait_ms, 100.0);
  const offload::Timing none = p.take_timing();
  EXPECT_EQ(none.updates, 0);
  EXPECT_EQ(none.update_bytes, 0.0);
  EXPECT_EQ(none.update_ms, 0.0);
  EXPECT_EQ(none.wait_ms, 0.0);
}

// The state on disk (a StateSwap): the same update as in memory, bit for bit, over three steps; the reads
// queued early (read_ahead) are taken by the update in their order; a skipped step leaves the state as it
// was; the CPU's wait for the disk is counted (and is zero with the state in memory).
TEST(OffloadPipeline, StateOnDiskUpdatesAsTheStateInMemory) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / fmt::format("zs_pipe_{}", ::getpid());
  std::filesystem::create_directories(dir);
  std::vector<UnitData> memory{UnitData(1000, 1), UnitData(37, 2), UnitData(4099, 3)};
  std::vector<UnitData> disk = memory;
  std::vector<offload::SwapRegion> regions;
  for (const UnitData& u : disk) {
    const auto bytes = static_cast<int64_t>(u.master.size()) * 4;
    regions.push_back(offload::swap_region(bytes, bytes, bytes));
  }
  std::vector<char> buffers(static_cast<std::size_t>(offload::swap_buffer_bytes(regions, 2)));
  auto swap = std::make_unique<offload::StateSwap>(dir.string(), 0, regions, buffers.data(), 2);
  offload::StateSwap* s = swap.get();
  for (int u = 0; u < 3; ++u) {  // the initial state into the file (as the engine's init does)
    const offload::StateSwap::Parts parts = s->get(u);
    const UnitData& d = disk[static_cast<std::size_t>(u)];
    std::memcpy(parts[0], d.master.data(), d.master.size() * 4);
    std::memset(parts[1], 0, d.m.size() * 4);
    std::memset(parts[2], 0, d.v.size() * 4);
    s->put(u);
  }
  std::vector<offload::UnitShard> on_disk = shards_of(disk);
  for (offload::UnitShard& sh : on_disk) sh.master = nullptr, sh.m = sh.v = nullptr;
  offload::Pipeline a(Device::cpu(), DType::bf16, DType::f32, DType::f32, false, shards_of(memory));
  offload::Pipeline b(Device::cpu(), DType::bf16, DType::f32, DType::f32, false, std::move(on_disk), std::move(swap));
  const std::vector<int> order{2, 0, 1};
  for (int step = 1; step <= 4; ++step) {
    kernels::OptimizerHyper h = adamw();
    h.step = step;
    for (int u : {1, 2, 0}) {
      if (u == 1) b.read_ahead(order);  // the first download of the step, as the engine calls it
      a.download(u, memory[static_cast<std::size_t>(u)].device_grads.data(), nullptr);
      b.download(u, disk[static_cast<std::size_t>(u)].device_grads.data(), nullptr);
    }
    if (step == 3) {  // skipped: no update, the state read ahead goes back unchanged
      b.skip();
      continue;
    }
    a.update(h, 0.5f, order);
    b.update(h, 0.5f, order);
    a.drain();
    b.drain();
  }
  for (int u = 0; u < 3; ++u) {
    const UnitData& m = memory[static_cast<std::size_t>(u)];
    const offload::StateSwap::Parts parts = b.swap()->get(u);
    EXPECT_EQ(0, std::memcmp(parts[0], m.master.data(), m.master.size() * 4)) << "master, unit " << u;
    EXPECT_EQ(0, std::memcmp(parts[1], m.m.data(), m.m.size() * 4)) << "m, unit " << u;
    EXPECT_EQ(0, std::memcmp(parts[2], m.v.data(), m.v.size() * 4)) << "v, unit " << u;
    EXPECT_EQ(disk[static_cast<std::size_t>(u)].device_params, m.device_params) << "uploaded, unit " << u;
  }
  EXPECT_EQ(a.take_timing().disk_wait_ms, 0.0);
  EXPECT_EQ(b.take_timing().updates, 9);
  b.read_ahead(order);
  EXPECT_THROW(b.update(adamw(), 1.0f, std::vector<int>{0, 1, 2}), Error) << "an order other than the read-ahead's";
  b.drain();  // the read-ahead goes back unchanged
  std::filesystem::remove_all(dir);
}

TEST(OffloadPipeline, DefaultCpuThreadsLeaveACoreToEachGpu) {
  EXPECT_EQ(offload::default_cpu_threads(16, 1), 15);
  EXPECT_EQ(offload::default_cpu_threads(128, 8), 15);  // 8 GPUs on a 128-core node: 16 cores each
  EXPECT_EQ(offload::default_cpu_threads(12, 8), 1);    // fewer cores than ranks: never 0
  EXPECT_EQ(offload::default_cpu_threads(2, 1), 1);
  EXPECT_EQ(offload::default_cpu_threads(8, 0), 7);  // an unknown count is taken as one rank
}

}  // namespace
}  // namespace zs
