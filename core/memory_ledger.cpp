// MemoryLedger bookkeeping.
#include "core/memory_ledger.h"

#include <algorithm>

#include "core/error.h"

namespace zs {

std::string_view mem_category_name(MemCategory c) {
  static constexpr std::array<std::string_view, kMemCategoryCount> names = {
      "params",         "grads",        "master",          "optim_state",
      "gather_buffers", "comm_scratch", "offload_staging", "checkpoint_staging",
      "activations",    "other"};
  return names[static_cast<std::size_t>(c)];
}

int MemoryLedger::slot(MemPlace p) {
  if (p.host) return 0;
  if (p.device.is_cpu()) return 1;
  ZS_CHECK(p.device.index >= 0 && p.device.index < kMaxCudaDevices, "memory ledger: device {} is out of range",
           p.device.str());
  return 2 + p.device.index;
}

MemPlace MemoryLedger::place_of(int slot) {
  return slot == 0 ? MemPlace::host_memory() : slot == 1 ? MemPlace(Device::cpu()) : MemPlace(Device::cuda(slot - 2));
}

void MemoryLedger::charge(MemPlace d, MemCategory c, int64_t bytes) {
  std::lock_guard lk(mu_);
  PerPlace& p = dev_[static_cast<std::size_t>(slot(d))];
  MemStats& s = p.cat[static_cast<std::size_t>(c)];
  p.used = true;
  s.current += bytes;
  s.peak = std::max(s.peak, s.current);
  p.total.current += bytes;
  p.total.peak = std::max(p.total.peak, p.total.current);
  if (tracing()) record(slot(d));
}

void MemoryLedger::release(MemPlace d, MemCategory c, int64_t bytes) {
  std::lock_guard lk(mu_);
  PerPlace& p = dev_[static_cast<std::size_t>(slot(d))];
  MemStats& s = p.cat[static_cast<std::size_t>(c)];
  ZS_CHECK(s.current >= bytes, "memory ledger: releasing {} bytes of {} on {} but only {} are charged", bytes,
           mem_category_name(c), d.str(), s.current);
  s.current -= bytes;
  p.total.current -= bytes;
  if (tracing()) record(slot(d));
}

void MemoryLedger::record(int slot) {
  TracePoint t;
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - trace_start_).count();
  t.place = place_of(slot);
  for (int c = 0; c < kMemCategoryCount; ++c)
    t.current[static_cast<std::size_t>(c)] =
        dev_[static_cast<std::size_t>(slot)].cat[static_cast<std::size_t>(c)].current;
  points_.push_back(t);
}

void MemoryLedger::start_trace() {
  std::lock_guard lk(mu_);
  trace_start_ = std::chrono::steady_clock::now();
  points_.clear();
  marks_.clear();
  for (int s = 0; s < static_cast<int>(dev_.size()); ++s)
    if (dev_[static_cast<std::size_t>(s)].used) record(s);  // where it starts from
  tracing_ = true;
}

void MemoryLedger::mark(std::string label) {
  if (!tracing()) return;
  std::lock_guard lk(mu_);
  marks_.push_back(
      {std::chrono::duration<double>(std::chrono::steady_clock::now() - trace_start_).count(), std::move(label)});
}

std::vector<MemoryLedger::TracePoint> MemoryLedger::trace_points() const {
  std::lock_guard lk(mu_);
  return points_;
}

std::vector<MemoryLedger::TraceMark> MemoryLedger::trace_marks() const {
  std::lock_guard lk(mu_);
  return marks_;
}

MemStats MemoryLedger::stats(MemPlace d, MemCategory c) const {
  std::lock_guard lk(mu_);
  return dev_[static_cast<std::size_t>(slot(d))].cat[static_cast<std::size_t>(c)];
}

MemStats MemoryLedger::total(MemPlace d) const {
  std::lock_guard lk(mu_);
  return dev_[static_cast<std::size_t>(slot(d))].total;
}

std::vector<MemPlace> MemoryLedger::places() const {
  std::lock_guard lk(mu_);
  std::vector<MemPlace> out;
  for (std::size_t i = 0; i < dev_.size(); ++i)
    if (dev_[i].used) out.push_back(place_of(static_cast<int>(i)));
  return out;
}

void MemoryLedger::reset_peaks() {
  std::lock_guard lk(mu_);
  for (PerPlace& p : dev_) {
    for (MemStats& s : p.cat) s.peak = s.current;
    p.total.peak = p.total.current;
  }
}

MemoryLedger& MemoryLedger::global() {
  static MemoryLedger ledger;
  return ledger;
}

}  // namespace zs
