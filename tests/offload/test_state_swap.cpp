// The optimizer state's file on its own (offload.optimizer: nvme): regions laid out 4 KiB aligned; many
// units' state cycled through fewer buffers by the I/O thread while another thread updates it, as the CPU
// step does, every byte back where it was written; the file unlinked from the start; a missing directory,
// a disk too small and a failed write each a clear error, and nothing hangs after one.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "offload/state_swap.h"

namespace zs {
namespace {

namespace fs = std::filesystem;
using offload::StateSwap;
using offload::SwapRegion;

TEST(SwapRegion, PartsAre4KiBAlignedOneAfterTheOther) {
  const SwapRegion r = offload::swap_region(10, 0, 8192 + 1);
  EXPECT_EQ(r.bytes, (std::array<int64_t, 3>{10, 0, 8193}));
  EXPECT_EQ(r.offset, (std::array<int64_t, 3>{0, 4096, 4096}));
  EXPECT_EQ(r.size, 4096 + 3 * 4096);
  const std::vector<SwapRegion> all = {r, offload::swap_region(4096, 4096, 4096), offload::swap_region(0, 0, 0)};
  EXPECT_EQ(offload::swap_file_bytes(all), 4 * 4096 + 3 * 4096);
  EXPECT_EQ(offload::swap_buffer_bytes(all, 3), 3 * 4 * 4096 + 4096);  // the largest region, plus alignment slack
  EXPECT_EQ(offload::swap_buffer_bytes(std::vector<SwapRegion>{offload::swap_region(0, 0, 0)}, 3), 0);
}

// A unit's part k at version `version`: a value per byte that differs by unit, part, element and version.
uint8_t pattern(int u, int k, int64_t e, int version) {
  return static_cast<uint8_t>(u * 31 + k * 7 + e * 13 + version * 101 + e / 251);
}

void fill(const StateSwap::Parts& p, const SwapRegion& r, int u, int version) {
  for (std::size_t k = 0; k < 3; ++k)
    for (int64_t e = 0; e < r.bytes[k]; ++e)
      static_cast<uint8_t*>(p[k])[e] = pattern(u, static_cast<int>(k), e, version);
}

// The first element that is not unit u's pattern at `version`, as text ("" when all are).
std::string mismatch(const StateSwap::Parts& p, const SwapRegion& r, int u, int version) {
  for (std::size_t k = 0; k < 3; ++k) {
    if ((p[k] != nullptr) != (r.bytes[k] > 0)) return fmt::format("unit {} part {}: presence", u, k);
    for (int64_t e = 0; e < r.bytes[k]; ++e)
      if (static_cast<const uint8_t*>(p[k])[e] != pattern(u, static_cast<int>(k), e, version))
        return fmt::format("unit {} part {} byte {} at version {}", u, k, e, version);
  }
  return "";
}

struct SwapFixture : ::testing::Test {
  void SetUp() override {
    dir = fs::temp_directory_path() / fmt::format("zs_swap_{}", ::getpid());
    fs::create_directories(dir);
    // Sizes that are and are not multiples of 4 KiB; a unit with m only (Lion, SGD), and one with nothing
    // trainable.
    for (int64_t n : {1000, 4096, 70000, 3, 123457, 0, 9000}) {
      const int64_t v = n == 3 ? 0 : n * 4;
      regions.push_back(offload::swap_region(n * 4, n * 4, v));
    }
  }
  void TearDown() override { fs::remove_all(dir); }
  std::vector<char> buffers(int count) const {
    return std::vector<char>(static_cast<std::size_t>(offload::swap_buffer_bytes(regions, count)));
  }
  fs::path dir;
  std::vector<SwapRegion> regions;
};

// Five steps over 7 units with 3 buffers: the host prefetches each step's order (forward, then backward,
// then forward...) while the "CPU" thread acquires each unit, checks it holds the last step's bytes, writes
// this step's and releases it; then a step that changes nothing writes nothing. Between steps get/put read
// and write single units in place.
TEST_F(SwapFixture, CyclesEveryUnitThroughFewerBuffersByteForByte) {
  std::vector<char> mem = buffers(3);
  StateSwap swap(dir.string(), 5, regions, mem.data(), 3);
  std::printf("O_DIRECT on %s: %s\n", dir.c_str(), swap.direct() ? "yes" : "no (the page cache)");
  EXPECT_EQ(swap.file_bytes(), offload::swap_file_bytes(regions));
  EXPECT_TRUE(fs::is_empty(dir)) << "the file is unlinked at once";
  EXPECT_NE(swap.path().find("rank5"), std::string::npos) << swap.path();
  const int n = static_cast<int>(regions.size());
  for (int u = 0; u < n; ++u) {
    fill(swap.get(u), regions[static_cast<std::size_t>(u)], u, 0);
    swap.put(u);
  }
  for (int step = 1; step <= 5; ++step) {
    std::vector<int> order;
    for (int i = 0; i < n; ++i) order.push_back(step % 2 ? i : n - 1 - i);
    std::string bad;
    std::thread cpu([&] {
      for (int u : order) {
        const StateSwap::Parts p = swap.acquire(u);
        const SwapRegion& r = regions[static_cast<std::size_t>(u)];
        if (const std::string m = mismatch(p, r, u, step - 1); !m.empty() && bad.empty()) bad = m;
        fill(p, r, u, step);
        swap.release(u);
      }
    });
    for (int u : order) swap.prefetch(u);
    cpu.join();
    EXPECT_EQ(bad, "") << "step " << step;
  }
  // A skipped step: each unit read and scribbled on, but released unchanged, so not written back.
  for (int u = 0; u < n; ++u) swap.prefetch(u);
  for (int u = 0; u < n; ++u) {
    fill(swap.acquire(u), regions[static_cast<std::size_t>(u)], u, 7);
    swap.release(u, /*changed=*/false);
  }
  swap.drain();
  for (int u = n; u-- > 0;) EXPECT_EQ(mismatch(swap.get(u), regions[static_cast<std::size_t>(u)], u, 5), "");
  // put writes what get read, changed in place; the same unit again is not read over it.
  fill(swap.get(2), regions[2], 2, 9);
  swap.put(2);
  EXPECT_EQ(mismatch(swap.get(0), regions[0], 0, 5), "");
  EXPECT_EQ(mismatch(swap.get(2), regions[2], 2, 9), "");
}

TEST_F(SwapFixture, AMissingDirectoryOrTooFewBuffersIsAClearError) {
  std::vector<char> mem = buffers(2);
  try {
    StateSwap swap((dir / "nope").string(), 1, regions, mem.data(), 2);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 1: offload.nvme_path"), std::string::npos) << msg;
    EXPECT_NE(msg.find("is not a directory"), std::string::npos) << msg;
  }
  EXPECT_THROW(StateSwap(dir.string(), 1, regions, mem.data(), 1), Error);
}

// A file-size limit stands in for a disk without the room: at start-up the allocation fails, naming the
// bytes; set after start-up it fails a write-back in the step, and the error names the unit and the op;
// acquire and drain report it rather than waiting forever.
TEST_F(SwapFixture, NoRoomOnTheDiskFailsClearlyAndNothingHangs) {
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 64 * 1024;
  std::vector<char> mem = buffers(2);
  std::string at_start;
  setrlimit(RLIMIT_FSIZE, &small);
  try {
    StateSwap swap(dir.string(), 0, regions, mem.data(), 2);
  } catch (const Error& e) {
    at_start = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  EXPECT_NE(at_start.find(fmt::format("could not allocate {} bytes", offload::swap_file_bytes(regions))),
            std::string::npos)
      << at_start;
  std::string in_step;
  {
    StateSwap swap(dir.string(), 0, regions, mem.data(), 2);
    setrlimit(RLIMIT_FSIZE, &small);
    const int n = static_cast<int>(regions.size());
    for (int u = 0; u < n; ++u) swap.prefetch(u);
    try {
      for (int u = 0; u < n; ++u) {
        swap.acquire(u);
        swap.release(u);
      }
      swap.drain();
    } catch (const Error& e) {
      in_step = e.what();
    }
    EXPECT_THROW(swap.drain(), Error) << "the failure sticks";
    setrlimit(RLIMIT_FSIZE, &old);
  }  // the destructor logs it and returns
  signal(SIGXFSZ, SIG_DFL);
  EXPECT_NE(in_step.find("rank 0: offload.optimizer: nvme: writing of the optimizer state (master, m, v) of unit 2"),
            std::string::npos)
      << in_step;
}

}  // namespace
}  // namespace zs
