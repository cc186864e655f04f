// MemoryLedger accounting: per category and device, peaks, Buffer charging, concurrency.
#include <gtest/gtest.h>

#include <thread>

#include "core/buffer.h"
#include "core/error.h"
#include "core/memory_ledger.h"

namespace zs {
namespace {

TEST(MemoryLedger, CurrentAndPeakPerCategoryAndTotal) {
  MemoryLedger l;
  const Device cpu = Device::cpu(), gpu = Device::cuda(1);
  l.charge(cpu, MemCategory::params, 100);
  l.charge(cpu, MemCategory::grads, 50);
  l.release(cpu, MemCategory::params, 100);
  l.charge(cpu, MemCategory::grads, 30);
  l.charge(gpu, MemCategory::master, 7);
  EXPECT_EQ(l.stats(cpu, MemCategory::params).current, 0);
  EXPECT_EQ(l.stats(cpu, MemCategory::params).peak, 100);
  EXPECT_EQ(l.stats(cpu, MemCategory::grads).current, 80);
  EXPECT_EQ(l.stats(cpu, MemCategory::grads).peak, 80);
  EXPECT_EQ(l.total(cpu).current, 80);
  EXPECT_EQ(l.total(cpu).peak, 150);  // peak of the sum, not the sum of peaks (180)
  EXPECT_EQ(l.total(gpu).current, 7);
  EXPECT_EQ(l.places().size(), 2u);
  l.reset_peaks();
  EXPECT_EQ(l.total(cpu).peak, 80);
  EXPECT_EQ(l.stats(cpu, MemCategory::params).peak, 0);
}

TEST(MemoryLedger, OverReleaseIsAnError) {
  MemoryLedger l;
  l.charge(Device::cpu(), MemCategory::params, 10);
  EXPECT_THROW(l.release(Device::cpu(), MemCategory::params, 11), Error);
}

TEST(MemoryLedger, BufferChargesAndReleases) {
  MemoryLedger l;
  const MemPlace host = MemPlace::host_memory();
  {
    // Host memory and the CPU device's memory are separate places (so offload shows in a CPU build).
    Buffer a(1000, MemoryKind::host, Device::cpu(), MemCategory::gather_buffers, l);
    Buffer b(24, MemoryKind::device, Device::cpu(), MemCategory::comm_scratch, l);
    Buffer c(8, MemoryKind::pinned, Device::cpu(), MemCategory::master, l);
    EXPECT_EQ(l.stats(host, MemCategory::gather_buffers).current, 1000);
    EXPECT_EQ(l.stats(Device::cpu(), MemCategory::gather_buffers).current, 0);
    Buffer moved = std::move(a);
    EXPECT_EQ(l.total(host).current, 1008);
    EXPECT_EQ(l.total(Device::cpu()).current, 24);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(moved.data()) % 64, 0u);
    EXPECT_THROW(moved.view(DType::f32, 251), Error);
    EXPECT_EQ(moved.view(DType::f32, 250).bytes(), 1000u);
  }
  EXPECT_EQ(l.total(host).current, 0);
  EXPECT_EQ(l.total(host).peak, 1008);
  EXPECT_EQ(l.total(Device::cpu()).current, 0);
}

TEST(MemoryLedger, BorrowedBuffersChargeButDoNotFree) {
  MemoryLedger l;
  std::vector<char> pool(256);
  {
    Buffer part =
        Buffer::borrowed(pool.data() + 64, 100, MemoryKind::pinned, Device::cpu(), MemCategory::optim_state, l);
    Buffer moved = std::move(part);
    EXPECT_EQ(moved.data(), pool.data() + 64);
    EXPECT_EQ(l.stats(MemPlace::host_memory(), MemCategory::optim_state).current, 100);
  }  // freeing pool memory here would crash the vector's own release below
  EXPECT_EQ(l.stats(MemPlace::host_memory(), MemCategory::optim_state).current, 0);
}

TEST(MemoryLedger, ThreadSafe) {
  MemoryLedger l;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        l.charge(Device::cpu(), MemCategory::optim_state, 3);
        l.release(Device::cpu(), MemCategory::optim_state, 3);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(l.total(Device::cpu()).current, 0);
  EXPECT_GE(l.total(Device::cpu()).peak, 3);
  EXPECT_LE(l.total(Device::cpu()).peak, 12);
}

TEST(MemoryLedger, OutOfMemoryNamesTheNeed) {
  try {
    Buffer huge(std::size_t{1} << 62, MemoryKind::host, Device::cpu(), MemCategory::params);
    FAIL() << "allocation of 2^62 bytes succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("params"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zs
