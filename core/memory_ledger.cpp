// MemoryLedger bookkeeping.
#include "core/memory_ledger.h"

#include <algorithm>

#include "core/error.h"

namespace zs {

std::string_view mem_category_name(MemCategory c) {
  static constexpr std::array<std::string_view, kMemCategoryCount> names = {
      "params",       "grads",           "master",      "optim_state", "gather_buffers",
      "comm_scratch", "offload_staging", "activations", "other"};
  return names[static_cast<std::size_t>(c)];
}

int MemoryLedger::slot(Device d) {
  if (d.is_cpu()) return 0;
  ZS_CHECK(d.index >= 0 && d.index < kMaxCudaDevices, "memory ledger: device {} is out of range", d.str());
  return 1 + d.index;
}

void MemoryLedger::charge(Device d, MemCategory c, int64_t bytes) {
  std::lock_guard lk(mu_);
  PerDevice& p = dev_[static_cast<std::size_t>(slot(d))];
  MemStats& s = p.cat[static_cast<std::size_t>(c)];
  p.used = true;
  s.current += bytes;
  s.peak = std::max(s.peak, s.current);
  p.total.current += bytes;
  p.total.peak = std::max(p.total.peak, p.total.current);
  if (tracing()) record(slot(d));
}

void MemoryLedger::release(Device d, MemCategory c, int64_t bytes) {
  std::lock_guard lk(mu_);
  PerDevice& p = dev_[static_cast<std::size_t>(slot(d))];
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
  t.device = slot == 0 ? Device::cpu() : Device::cuda(slot - 1);
  for (int c = 0; c < kMemCategoryCount; ++c)
    t.current[static_cast<std::size_t>(c)] = dev_[static_cast<std::size_t>(slot)].cat[static_cast<std::size_t>(c)].current;
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

MemStats MemoryLedger::stats(Device d, MemCategory c) const {
  std::lock_guard lk(mu_);
  return dev_[static_cast<std::size_t>(slot(d))].cat[static_cast<std::size_t>(c)];
}

MemStats MemoryLedger::total(Device d) const {
  std::lock_guard lk(mu_);
  return dev_[static_cast<std::size_t>(slot(d))].total;
}

std::vector<Device> MemoryLedger::devices() const {
  std::lock_guard lk(mu_);
  std::vector<Device> out;
  for (std::size_t i = 0; i < dev_.size(); ++i)
    if (dev_[i].used) out.push_back(i == 0 ? Device::cpu() : Device::cuda(static_cast<int>(i) - 1));
  return out;
}

void MemoryLedger::reset_peaks() {
  std::lock_guard lk(mu_);
  for (PerDevice& p : dev_) {
    for (MemStats& s : p.cat) s.peak = s.current;
    p.total.peak = p.total.current;
  }
}

MemoryLedger& MemoryLedger::global() {
  static MemoryLedger ledger;
  return ledger;
}

}  // namespace zs
