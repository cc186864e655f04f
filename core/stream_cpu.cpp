// CPU streams: FIFO worker threads; an event is a point in a stream's count of finished items.
#include "core/stream_cpu.h"

#include "core/error.h"

namespace zs {

std::pair<std::shared_ptr<CpuStreamProgress>, uint64_t> CpuEvent::point() const {
  std::lock_guard lk(mu_);
  return {progress_, target_};
}

bool CpuEvent::query() const {
  const auto [progress, target] = point();
  return !progress || progress->reached(target);
}

void CpuEvent::synchronize() {
  const auto [progress, target] = point();
  if (progress) progress->wait_for(target);
}

CpuStream::CpuStream() : ring_(64), worker_([this] { run(); }) {}

CpuStream::~CpuStream() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void CpuStream::push(Item item) {
  {
    std::lock_guard lk(mu_);
    if (queue_size_ == ring_.size()) {  // grow (rare): the queue in order, then room
      std::vector<Item> bigger(ring_.size() * 2);
      for (std::size_t i = 0; i < queue_size_; ++i) bigger[i] = std::move(ring_[(queue_head_ + i) % ring_.size()]);
      ring_ = std::move(bigger);
      queue_head_ = 0;
    }
    ring_[(queue_head_ + queue_size_) % ring_.size()] = std::move(item);
    ++queue_size_;
    ++submitted_;
  }
  cv_.notify_one();
}

void CpuStream::submit(Task fn) {
  push(Item{std::move(fn), nullptr, 0});
}

static CpuEvent& as_cpu(Event& e) {
  auto* c = dynamic_cast<CpuEvent*>(&e);
  ZS_CHECK(c != nullptr, "a CPU stream can only record or wait on a CPU event, got one on {}", e.device().str());
  return *c;
}

void CpuStream::record(Event& event) {
  CpuEvent& e = as_cpu(event);
  uint64_t target = 0;
  {
    std::lock_guard lk(mu_);
    target = submitted_;
  }
  std::lock_guard lk(e.mu_);
  e.progress_ = progress_;
  e.target_ = target;
}

void CpuStream::wait(Event& event) {
  auto [progress, target] = as_cpu(event).point();
  // Nothing to wait for: never recorded, already reached, or this stream's own point (FIFO covers it).
  if (!progress || progress == progress_ || progress->reached(target)) return;
  push(Item{nullptr, std::move(progress), target});
}

void CpuStream::synchronize() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_size_ == 0 && !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void CpuStream::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || queue_size_ > 0; });
    if (queue_size_ == 0) return;  // stop requested and drained
    Item item = std::move(ring_[queue_head_]);
    queue_head_ = (queue_head_ + 1) % ring_.size();
    --queue_size_;
    busy_ = true;
    lk.unlock();
    if (item.fn) {
      try {
        item.fn();
      } catch (...) {
        std::lock_guard elk(mu_);
        if (!error_) error_ = std::current_exception();
      }
    } else {
      item.wait_on->wait_for(item.target);
    }
    item = Item{};  // the closure's captures go before the work counts as done
    {
      std::lock_guard plk(progress_->mu);
      ++progress_->done;
    }
    progress_->cv.notify_all();
    lk.lock();
    busy_ = false;
    if (queue_size_ == 0) idle_cv_.notify_all();
  }
}

}  // namespace zs
