// The parameters' file on its own (offload.params: nvme): many units' shards cached in fewer host slots
// while a "CPU step" thread writes each unit's new shard and the gathers' thread reads them ahead, acquires
// them and copies them out on a stream, as the engine does; every copy holds the unit's latest shard, also
// when a stale read-ahead was in flight as the update began; a missing directory, too few slots and a failed
// write are clear errors, and nothing hangs after one.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/stream.h"
#include "offload/swap_cache.h"

namespace zs {
namespace {

namespace fs = std::filesystem;
using offload::SwapCache;

uint8_t pattern(int u, int64_t e, int version) {
  return static_cast<uint8_t>(u * 31 + e * 13 + version * 101 + e / 251);
}

void fill(void* p, int64_t bytes, int u, int version) {
  for (int64_t e = 0; e < bytes; ++e) static_cast<uint8_t*>(p)[e] = pattern(u, e, version);
}

// The first byte that is not unit u's at `version`, as text ("" when all are).
std::string mismatch(const void* p, int64_t bytes, int u, int version) {
  for (int64_t e = 0; e < bytes; ++e)
    if (static_cast<const uint8_t*>(p)[e] != pattern(u, e, version))
      return fmt::format("unit {} byte {} is not version {}'s", u, e, version);
  return "";
}

struct SwapCacheFixture : ::testing::Test {
  void SetUp() override {
    dir = fs::temp_directory_path() / fmt::format("zs_param_swap_{}", ::getpid());
    fs::create_directories(dir);
    // Multiples of 4 KiB and not; a unit with nothing; the first large, so that a read of it is slow.
    bytes = {(4 << 20) + 2000, 8192, 140000, 6, 246914, 0, 18000};
  }
  void TearDown() override { fs::remove_all(dir); }
  std::vector<offload::SwapRegion> regions() const {
    std::vector<offload::SwapRegion> out;
    for (int64_t b : bytes) out.push_back(offload::swap_region(b, 0, 0));
    return out;
  }
  std::vector<char> buffers(int count) const {
    return std::vector<char>(static_cast<std::size_t>(offload::swap_buffer_bytes(regions(), count)));
  }
  int units() const { return static_cast<int>(bytes.size()); }
  fs::path dir;
  std::vector<int64_t> bytes;
};

// Four steps over 7 units with 3 slots. Each step: the gathers' thread takes the last units, then reads the
// first ones ahead (stale: the update is about to replace them); the CPU thread updates the units in forward
// order, starting while those reads are in flight, and the gathers' thread runs the next forward (each unit
// once its update is done, reading the next two ahead) and backward (releasing each unit as not wanted
// again), copying every acquired slot out on a stream; each copy must hold the step's version. Then every
// unit is read back from the disk.
TEST_F(SwapCacheFixture, EveryGatherSeesTheLatestShardThroughFewerSlots) {
  std::vector<char> mem = buffers(3);
  SwapCache swap(dir.string(), 4, regions(), mem.data(), 3, Device::cpu(), SwapCache::kParams);
  std::printf("O_DIRECT on %s: %s\n", dir.c_str(), swap.direct() ? "yes" : "no (the page cache)");
  EXPECT_TRUE(fs::is_empty(dir)) << "the file is unlinked at once";
  EXPECT_NE(swap.path().find("zeroshard-params.rank4"), std::string::npos) << swap.path();
  const int n = units();
  for (int u = 0; u < n; ++u) {
    fill(swap.begin_write(u), bytes[static_cast<std::size_t>(u)], u, 0);
    swap.finish(u);
  }
  std::unique_ptr<Stream> copy = make_stream(Device::cpu());
  std::vector<std::vector<uint8_t>> device(static_cast<std::size_t>(n));
  for (int u = 0; u < n; ++u) device[static_cast<std::size_t>(u)].resize(static_cast<std::size_t>(bytes[u]));
  swap.drain();
  (void)swap.take_stats();
  for (int step = 1; step <= 4; ++step) {
    for (int u = n - 3; u < n; ++u) {
      swap.acquire(u);
      swap.release(u, copy.get());
    }
    for (int u = 0; u < 3; ++u) swap.prefetch(u);  // stale reads in flight as the update starts
    std::atomic<int> updated{0};
    std::thread cpu([&] {
      for (int u = 0; u < n; ++u) {
        fill(swap.begin_write(u), bytes[static_cast<std::size_t>(u)], u, step);
        swap.finish(u);
        updated.store(u + 1, std::memory_order_release);
      }
    });
    std::string bad;
    auto gather = [&](int u, bool again) {
      auto& out = device[static_cast<std::size_t>(u)];
      const void* src = swap.acquire(u);
      void* dst = out.data();
      const auto len = out.size();
      copy->submit([dst, src, len] {
        if (len > 0) std::memcpy(dst, src, len);  // (an empty vector's data() may be null)
      });
      swap.release(u, copy.get(), again);
      copy->synchronize();
      if (const std::string m = mismatch(out.data(), bytes[static_cast<std::size_t>(u)], u, step);
          !m.empty() && bad.empty())
        bad = m;
    };
    for (int u = 0; u < n; ++u) {  // forward: each unit once its update is done (wait_params)
      while (updated.load(std::memory_order_acquire) <= u) std::this_thread::yield();
      gather(u, true);
      for (int v = u + 1; v < std::min(n, u + 3); ++v)
        if (updated.load(std::memory_order_acquire) > v) swap.prefetch(v);
    }
    cpu.join();
    for (int u = n; u-- > 0;) {  // backward: each unit's last gather before its update
      gather(u, false);
      if (u > 0) swap.prefetch(u - 1);
    }
    EXPECT_EQ(bad, "") << "step " << step;
  }
  const SwapCache::Stats s = swap.take_stats();
  EXPECT_EQ(s.acquires, 4 * (2 * n + 3));
  EXPECT_GE(s.reads, 4 * 3) << "7 units do not fit 3 slots";
  // What the disk holds is the last version: every unit read back through the slots, twice, so that the
  // second pass reads from the disk.
  swap.drain();
  for (int pass = 0; pass < 2; ++pass)
    for (int u = 0; u < n; ++u) {
      EXPECT_EQ(mismatch(swap.acquire(u), bytes[static_cast<std::size_t>(u)], u, 4), "") << "pass " << pass;
      swap.release(u, copy.get());
    }
}

// The gradients' use (offload.grads: nvme), as the offload pipeline runs it: the backward's downloads fill
// each unit's slot in reverse order and a "copy stream" thread finishes each one once it has landed, while
// the CPU step's thread, after the backward, reads each unit in forward order (the next two ahead) and
// releases it as not wanted again. Step 3 is skipped (an overflow: nothing reads the gradients), so step 4
// writes over unused slots and stale data on the disk. Every update must see its step's gradients.
TEST_F(SwapCacheFixture, TheUpdateSeesEachStepsGradientsWrittenInReverseOrder) {
  std::vector<char> mem = buffers(3);
  SwapCache swap(dir.string(), 1, regions(), mem.data(), 3, Device::cpu(), SwapCache::kGrads);
  EXPECT_NE(swap.path().find("zeroshard-grads.rank1"), std::string::npos) << swap.path();
  const int n = units();
  std::unique_ptr<Stream> copy = make_stream(Device::cpu());  // the downloads, then their finish
  int64_t acquires = 0;
  for (int step = 1; step <= 5; ++step) {
    for (int u = n; u-- > 0;) {  // backward
      void* slot = swap.begin_write(u);
      const int64_t len = bytes[static_cast<std::size_t>(u)];
      copy->submit([slot, len, u, step, &swap] {
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // the copy lands a little later
        fill(slot, len, u, step);
        swap.finish(u);
      });
    }
    if (step == 3) continue;  // skipped: nothing reads this step's gradients
    std::string bad;
    std::thread cpu([&] {
      for (int u = 0; u < n; ++u) {  // the update, in forward order
        const void* g = swap.acquire(u);
        for (int v = u + 1; v < std::min(n, u + 3); ++v) swap.prefetch(v);
        if (const std::string m = mismatch(g, bytes[static_cast<std::size_t>(u)], u, step); !m.empty() && bad.empty())
          bad = m;
        swap.release(u, nullptr, /*again=*/false);
      }
    });
    cpu.join();
    acquires += n;
    EXPECT_EQ(bad, "") << "step " << step;
  }
  copy->synchronize();
  swap.drain();
  const SwapCache::Stats s = swap.take_stats();
  EXPECT_EQ(s.acquires, acquires);
  EXPECT_GE(s.reads, 4 * (n - 3 - 1)) << "7 units (one empty) do not fit 3 slots: the first in the update order "
                                         "were landed last and are still there, the others are read back";
}

TEST_F(SwapCacheFixture, AMissingDirectoryOrTooFewSlotsIsAClearError) {
  std::vector<char> mem = buffers(2);
  try {
    SwapCache swap((dir / "nope").string(), 3, regions(), mem.data(), 2, Device::cpu(), SwapCache::kParams);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 3: offload.nvme_path"), std::string::npos) << msg;
    EXPECT_NE(msg.find("is not a directory"), std::string::npos) << msg;
  }
  try {
    SwapCache swap(dir.string(), 3, regions(), mem.data(), 1, Device::cpu(), SwapCache::kParams);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offload.param_buffer_count 1 must be at least 2"), std::string::npos)
        << e.what();
  }
}

// A file-size limit set after start-up fails a write of an updated shard: drain and acquire name the unit (by
// the name the engine gives) and the operation rather than waiting forever.
TEST_F(SwapCacheFixture, AFailedWriteIsAClearErrorAndNothingHangs) {
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_IGN);
  std::vector<char> mem = buffers(2);
  std::string msg;
  {
    SwapCache swap(dir.string(), 0, regions(), mem.data(), 2, Device::cpu(), SwapCache::kParams,
                   {"embed", "h.0", "h.1", "h.2", "h.3", "h.4", "head"});
    rlimit small = old;
    small.rlim_cur = 4206592 + 65536;  // inside unit 2's region
    setrlimit(RLIMIT_FSIZE, &small);
    try {
      for (int u = 0; u < units(); ++u) {
        fill(swap.begin_write(u), bytes[static_cast<std::size_t>(u)], u, 1);
        swap.finish(u);
      }
      swap.drain();
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_THROW(swap.acquire(0), Error) << "the failure sticks";
    setrlimit(RLIMIT_FSIZE, &old);
  }  // the destructor logs it and returns
  signal(SIGXFSZ, SIG_DFL);
  EXPECT_NE(msg.find("rank 0: offload.params: nvme: writing of the parameters of unit 'h.1' (143360 bytes at offset "
                     "4206592)"),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace zs
