// MemoryLedger: bytes charged per device and category, current and peak, thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"

namespace zs {

enum class MemCategory : uint8_t {
  params,
  grads,
  master,
  optim_state,
  gather_buffers,
  comm_scratch,
  offload_staging,
  checkpoint_staging,  // host: the copy a checkpoint.async save writes from
  activations,
  other,
};
inline constexpr int kMemCategoryCount = 10;
std::string_view mem_category_name(MemCategory c);

// Where charged bytes live: one device's memory, or the host's (pageable or pinned). On a CPU engine the
// device is a separate host pool (MemoryKind::device on Device::cpu()), so the CPU build shows offload
// moving bytes from the device to the host just as a GPU build does.
struct MemPlace {
  bool host = false;
  Device device;
  constexpr MemPlace(Device d) : device(d) {}  // NOLINT(google-explicit-constructor): a device's memory
  static constexpr MemPlace host_memory() {
    MemPlace p(Device::cpu());
    p.host = true;
    return p;
  }
  friend constexpr bool operator==(const MemPlace&, const MemPlace&) = default;
  std::string str() const { return host ? "host" : device.str(); }
};

struct MemStats {
  int64_t current = 0;
  int64_t peak = 0;
};

class MemoryLedger {
 public:
  static constexpr int kMaxCudaDevices = 16;

  void charge(MemPlace p, MemCategory c, int64_t bytes);
  void release(MemPlace p, MemCategory c, int64_t bytes);

  MemStats stats(MemPlace p, MemCategory c) const;
  // Current and peak of the place's total (the peak of the sum, not the sum of per-category peaks).
  MemStats total(MemPlace p) const;
  // Places that have ever been charged.
  std::vector<MemPlace> places() const;
  // Peaks restart from the current values (e.g. after start-up, to measure one step).
  void reset_peaks();

  // The process-wide ledger that Buffer charges by default.
  static MemoryLedger& global();

  // A timeline for zsmem: once started, every change records its place's bytes per category, and mark()
  // records a labelled moment (e.g. "forward"). Off by default: charge/release then record nothing.
  struct TracePoint {
    double seconds = 0;  // since start_trace
    MemPlace place = Device::cpu();
    std::array<int64_t, kMemCategoryCount> current{};
  };
  struct TraceMark {
    double seconds = 0;
    std::string label;
  };
  void start_trace();
  bool tracing() const { return tracing_.load(std::memory_order_relaxed); }
  void mark(std::string label);
  std::vector<TracePoint> trace_points() const;
  std::vector<TraceMark> trace_marks() const;

 private:
  struct PerPlace {
    std::array<MemStats, kMemCategoryCount> cat{};
    MemStats total{};
    bool used = false;
  };
  static int slot(MemPlace p);  // 0: host, 1: the CPU device, 2 + i: cuda:i
  static MemPlace place_of(int slot);

  void record(int slot);  // with mu_ held

  mutable std::mutex mu_;
  std::array<PerPlace, 2 + kMaxCudaDevices> dev_{};
  std::atomic<bool> tracing_{false};
  std::chrono::steady_clock::time_point trace_start_;
  std::vector<TracePoint> points_;
  std::vector<TraceMark> marks_;
};

}  // namespace zs
