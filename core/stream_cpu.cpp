// CPU streams: FIFO worker threads; events and cross-stream waits built on generation counters.
#include "core/stream_cpu.h"

#include "core/error.h"

namespace zs {

bool CpuEvent::query() const {
  std::lock_guard lk(state_->mu);
  return !state_->last || state_->last->done;
}

void CpuEvent::synchronize() {
  std::unique_lock lk(state_->mu);
  auto point = state_->last;
  state_->cv.wait(lk, [&] { return !point || point->done; });
}

CpuStream::CpuStream() : worker_([this] { run(); }) {}

CpuStream::~CpuStream() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void CpuStream::submit(std::function<void()> fn) {
  {
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

static CpuEvent& as_cpu(Event& e) {
  auto* c = dynamic_cast<CpuEvent*>(&e);
  ZS_CHECK(c != nullptr, "a CPU stream can only record or wait on a CPU event, got one on {}", e.device().str());
  return *c;
}

void CpuStream::record(Event& event) {
  auto st = as_cpu(event).state_;
  auto point = std::make_shared<CpuEvent::Point>();
  {
    std::lock_guard lk(st->mu);
    st->last = point;
  }
  submit([st, point] {
    {
      std::lock_guard lk(st->mu);
      point->done = true;
    }
    st->cv.notify_all();
  });
}

void CpuStream::wait(Event& event) {
  auto st = as_cpu(event).state_;
  std::shared_ptr<CpuEvent::Point> point;
  {
    std::lock_guard lk(st->mu);
    point = st->last;
  }
  if (!point) return;
  submit([st, point] {
    std::unique_lock lk(st->mu);
    st->cv.wait(lk, [&] { return point->done; });
  });
}

void CpuStream::synchronize() {
  std::unique_lock lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void CpuStream::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop requested and drained
    std::function<void()> fn = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lk.unlock();
    try {
      fn();
    } catch (...) {
      std::lock_guard elk(mu_);
      if (!error_) error_ = std::current_exception();
    }
    fn = nullptr;
    lk.lock();
    busy_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

}  // namespace zs
