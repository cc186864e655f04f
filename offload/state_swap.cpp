// StateSwap: the file, its reader and writer threads, and the buffers' hand-offs.
#include "offload/state_swap.h"

#include <algorithm>

#include "core/error.h"
#include "core/log.h"

namespace zs::offload {

namespace {

constexpr const char* kParts[] = {"master", "m", "v"};

}  // namespace

StateSwap::StateSwap(const std::string& dir, int rank, std::vector<SwapRegion> regions, void* buffers, int count,
                     std::vector<std::string> names)
    : count_(at_least_two(count, "offload.buffer_count")),
      regions_(std::move(regions)),
      names_(std::move(names)),
      offset_(swap_offsets(regions_)),
      file_(dir, rank, offset_.back(), {"offload.optimizer: nvme", "optimizer state", "optimizer-state"}),
      base_(swap_aligned(buffers)) {
  for (const SwapRegion& r : regions_) slot_ = std::max(slot_, r.size);
  unit_of_.resize(2 * regions_.size() + static_cast<std::size_t>(count_));
  after_.resize(unit_of_.size());
  changed_.resize(unit_of_.size());
  last_job_.assign(regions_.size(), -1);
  threads_.start([this](bool writer) { run(writer); });
}

StateSwap::~StateSwap() {
  threads_.shut_down([this] { drain(); }, "the optimizer state's file");
}

StateSwap::Parts StateSwap::parts(int u, char* buffer) const {
  const SwapRegion& r = regions_[static_cast<std::size_t>(u)];
  Parts p{};
  for (std::size_t k = 0; k < 3; ++k) p[k] = r.bytes[k] > 0 ? buffer + r.offset[k] : nullptr;
  return p;
}

void StateSwap::io(bool write, int u, char* buffer) {
  const SwapRegion& r = regions_[static_cast<std::size_t>(u)];
  file_.io(write, offset_[static_cast<std::size_t>(u)], buffer, r.size, [&] {
    std::string parts;
    for (std::size_t k = 0; k < 3; ++k)
      if (r.bytes[k] > 0) parts += fmt::format("{}{}", parts.empty() ? "" : ", ", kParts[k]);
    return fmt::format("the optimizer state ({}) of {}", parts, swap_unit(names_, u));
  });
}

void StateSwap::run(bool writer) {
  const auto cap = static_cast<int64_t>(unit_of_.size());
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] {
      if (threads_.stopping()) return true;
      if (writer) return written_ < released_;
      // A read needs its buffer's last job written, and its unit's last job (the state it reads).
      return read_ < queued_ && read_ < written_ + count_ && written_ > after_[static_cast<std::size_t>(read_ % cap)];
    });
    if (threads_.stopping()) return;
    const int64_t s = writer ? written_ : read_;
    const int u = unit_of_[static_cast<std::size_t>(s % cap)];
    if (writer && !changed_[static_cast<std::size_t>(s % cap)]) {  // unchanged: the disk has it
      ++written_;
      cv_.notify_all();
      continue;
    }
    if (!threads_.unlocked(lk, [&] { io(writer, u, buffer(s)); })) return;
    ++(writer ? written_ : read_);
    cv_.notify_all();
  }
}

void StateSwap::prefetch(int u) {
  {
    std::unique_lock lk(mu_);
    // The ring holds two steps' jobs and the buffers'; a third step's prefetch waits for the oldest
    // jobs' writes (their acquires were queued before it, so they go on without this thread).
    const auto cap = static_cast<int64_t>(unit_of_.size());
    cv_.wait(lk, [&] { return threads_.failed() || queued_ - written_ < cap; });
    threads_.rethrow();
    unit_of_[static_cast<std::size_t>(queued_ % cap)] = u;
    int64_t& last = last_job_[static_cast<std::size_t>(u)];
    after_[static_cast<std::size_t>(queued_ % cap)] = last;
    last = queued_++;
    held_ = -1;  // the buffer get() filled may be read into
  }
  cv_.notify_all();
}

StateSwap::Parts StateSwap::acquire(int u) {
  std::unique_lock lk(mu_);
  const auto cap = static_cast<int64_t>(unit_of_.size());
  cv_.wait(lk, [&] { return threads_.failed() || read_ > acquired_; });  // prefetched, then read
  threads_.rethrow();
  ZS_CHECK(unit_of_[static_cast<std::size_t>(acquired_ % cap)] == u,
           "offload: the optimizer state of {} acquired out of its prefetch order (a bug)", swap_unit(names_, u));
  return parts(u, buffer(acquired_++));
}

void StateSwap::release(int u, bool changed) {
  {
    std::lock_guard lk(mu_);
    const auto cap = static_cast<int64_t>(unit_of_.size());
    ZS_CHECK(released_ < acquired_ && unit_of_[static_cast<std::size_t>(released_ % cap)] == u,
             "offload: the optimizer state of {} released out of order (a bug)", swap_unit(names_, u));
    changed_[static_cast<std::size_t>(released_ % cap)] = changed;
    ++released_;
  }
  cv_.notify_all();
}

void StateSwap::drain() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return threads_.failed() || written_ == queued_; });
  threads_.rethrow();
}

StateSwap::Parts StateSwap::get(int u) {
  drain();
  if (held_ != u) {
    held_ = -1;
    io(false, u, base_);
    held_ = u;
  }
  return parts(u, base_);
}

void StateSwap::put(int u) {
  ZS_CHECK(held_ == u, "offload: put({}) without get({}) (a bug)", u, u);
  io(true, u, base_);
}

}  // namespace zs::offload
