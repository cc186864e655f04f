// SwapCache: the slots, their hand-offs between the readers, the writers and the I/O threads.
#include "offload/swap_cache.h"

#include <algorithm>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

namespace zs::offload {

SwapCache::SwapCache(const std::string& dir, int rank, std::vector<SwapRegion> regions, void* buffers, int count,
                     Device device, Use use, std::vector<std::string> names)
    : use_(use),
      count_(at_least_two(count, use.count_setting)),
      regions_(std::move(regions)),
      names_(std::move(names)),
      offset_(swap_offsets(regions_)),
      file_(dir, rank, offset_.back(), use.file),
      base_(swap_aligned(buffers)),
      slots_(static_cast<std::size_t>(count)),
      slot_of_(regions_.size(), -1) {
  for (const SwapRegion& r : regions_) slot_bytes_ = std::max(slot_bytes_, r.size);
  for (Slot& s : slots_) s.copied = make_event(device);
  reads_.ring.resize(slots_.size());
  writes_.ring.resize(slots_.size());
  threads_.start([this](bool writer) { run(writer); });
}

SwapCache::~SwapCache() {
  threads_.shut_down([this] { drain(); }, fmt::format("the file of the {}", use_.file.contents));
}

int SwapCache::victim(bool prefetching) const {
  int best = -1;
  auto rank = [&](const Slot& s) { return std::pair{!s.used, s.wanted}; };  // used first, then least wanted
  for (int i = 0; i < count_; ++i) {
    const Slot& s = slots_[static_cast<std::size_t>(i)];
    if (busy(s)) continue;
    if (s.unit < 0) return i;
    if (prefetching && (!s.used || requests_ - s.wanted < count_ || !s.copied->query())) continue;
    if (best < 0 || rank(s) < rank(slots_[static_cast<std::size_t>(best)])) best = i;
  }
  return best;
}

void SwapCache::claim(int s, int u, State state) {
  Slot& slot = slots_[static_cast<std::size_t>(s)];
  if (slot.unit >= 0) slot_of_[static_cast<std::size_t>(slot.unit)] = -1;
  slot.unit = u;
  slot.state = state;
  slot.used = false;
  slot.wanted = requests_;
  slot_of_[static_cast<std::size_t>(u)] = s;
  if (state == State::reading) {
    reads_.push(s);
    ++in_flight_;
  }
}

void SwapCache::prefetch(int u) {
  {
    std::lock_guard lk(mu_);
    if (threads_.failed()) return;  // acquire reports it
    ++requests_;
    if (const int s = slot_of_[static_cast<std::size_t>(u)]; s >= 0) {
      slots_[static_cast<std::size_t>(s)].wanted = requests_;
      return;
    }
    const int s = victim(true);
    if (s < 0) return;
    claim(s, u, State::reading);
  }
  cv_.notify_all();
}

const void* SwapCache::acquire(int u) {
  const int64_t t0 = steady_ns();
  std::unique_lock lk(mu_);
  ++requests_;
  acquires_.fetch_add(1, std::memory_order_relaxed);
  for (;;) {
    threads_.rethrow();
    int s = slot_of_[static_cast<std::size_t>(u)];
    if (s < 0 && (s = victim(false)) >= 0) {
      claim(s, u, State::reading);
      cv_.notify_all();
    }
    if (s >= 0) {
      Slot& slot = slots_[static_cast<std::size_t>(s)];
      slot.wanted = requests_;
      if (slot.state == State::ready) {
        ++slot.pins;
        slot.used = true;
        wait_ns_.fetch_add(steady_ns() - t0, std::memory_order_relaxed);
        return slot_data(s);
      }
    }
    cv_.wait(lk);  // its read or fill, or a slot to read it into
  }
}

void SwapCache::release(int u, Stream* copy, bool again) {
  {
    std::lock_guard lk(mu_);
    const int s = slot_of_[static_cast<std::size_t>(u)];
    ZS_CHECK(s >= 0 && slots_[static_cast<std::size_t>(s)].pins > 0,
             "offload: the {} of {} released without acquire (a bug)", use_.file.contents, swap_unit(names_, u));
    Slot& slot = slots_[static_cast<std::size_t>(s)];
    if (copy) copy->record(*slot.copied);
    --slot.pins;
    if (!again) slot.wanted = -1 - count_;  // older than any request, and past the prefetches' protection
  }
  cv_.notify_all();
}

void* SwapCache::begin_write(int u) {
  const int64_t t0 = steady_ns();
  int s = -1;
  {
    std::unique_lock lk(mu_);
    ++requests_;
    for (;;) {
      threads_.rethrow();
      s = slot_of_[static_cast<std::size_t>(u)];
      if (s >= 0 && !busy(slots_[static_cast<std::size_t>(s)])) {
        slots_[static_cast<std::size_t>(s)].state = State::filling;
        break;
      }
      if (s < 0 && (s = victim(false)) >= 0) {
        claim(s, u, State::filling);
        break;
      }
      cv_.wait(lk);  // the unit's slot to be free of its read, copies and write, or any slot to be
    }
  }
  slots_[static_cast<std::size_t>(s)].copied->synchronize();  // the last copy out of it is done
  write_wait_ns_.fetch_add(steady_ns() - t0, std::memory_order_relaxed);
  return slot_data(s);
}

void SwapCache::finish(int u) {
  {
    std::lock_guard lk(mu_);
    const int s = slot_of_[static_cast<std::size_t>(u)];
    ZS_CHECK(s >= 0 && slots_[static_cast<std::size_t>(s)].state == State::filling,
             "offload: the {} of {} finished without begin_write (a bug)", use_.file.contents, swap_unit(names_, u));
    Slot& slot = slots_[static_cast<std::size_t>(s)];
    slot.state = State::ready;
    slot.writing = true;
    slot.wanted = requests_;
    writes_.push(s);
    ++in_flight_;
  }
  cv_.notify_all();
}

void SwapCache::run(bool writer) {
  Queue& queue = writer ? writes_ : reads_;
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return threads_.stopping() || queue.size > 0; });
    if (threads_.stopping()) return;
    const int s = queue.pop();
    Slot& slot = slots_[static_cast<std::size_t>(s)];
    const int u = slot.unit;  // fixed while the slot is in I/O
    const bool done = threads_.unlocked(lk, [&] {
      if (!writer) slot.copied->synchronize();  // the slot's last copy out, before it is read over
      const auto i = static_cast<std::size_t>(u);
      file_.io(writer, offset_[i], slot_data(s), regions_[i].size,
               [&] { return fmt::format("the {} of {}", use_.file.contents, swap_unit(names_, u)); });
    });
    if (!done) return;
    if (writer)
      slot.writing = false;
    else
      slot.state = State::ready;
    if (!writer) reads_done_.fetch_add(1, std::memory_order_relaxed);
    --in_flight_;
    cv_.notify_all();
  }
}

void SwapCache::drain() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return threads_.failed() || in_flight_ == 0; });
  threads_.rethrow();
}

SwapCache::Stats SwapCache::take_stats() {
  constexpr auto relaxed = std::memory_order_relaxed;
  Stats s;
  s.acquires = acquires_.exchange(0, relaxed);
  s.reads = reads_done_.exchange(0, relaxed);
  s.wait_ms = static_cast<double>(wait_ns_.exchange(0, relaxed)) / 1e6;
  s.write_wait_ms = static_cast<double>(write_wait_ns_.exchange(0, relaxed)) / 1e6;
  return s;
}

}  // namespace zs::offload
