// Thread pool: workers sleep on a generation counter; items are claimed with one atomic increment each.
#include "kernels/cpu/thread_pool.h"

#include <cstdlib>

namespace zs::kernels::cpu {

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

ThreadPool::ThreadPool() {
  int n = static_cast<int>(std::thread::hardware_concurrency());
  if (const char* v = std::getenv("ZS_CPU_THREADS")) {
    n = std::atoi(v);
    chosen_ = true;
  }
  set_threads(n > 0 ? n : 1);
}

void ThreadPool::set_default_threads(int n) {
  if (!chosen_) set_threads(n);
}

ThreadPool::~ThreadPool() {
  stop_workers();
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stop_ = false;
}

void ThreadPool::set_threads(int n) {
  std::lock_guard run(run_mu_);
  stop_workers();
  threads_ = n > 0 ? n : 1;
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker(); });
}

void ThreadPool::drain(void (*fn)(void*, int64_t), void* ctx, int64_t n) {
  for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n;) fn(ctx, i);
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  std::unique_lock lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    ++busy_;
    // Snapshot the job under the lock: no call publishes another until busy_ drops to 0.
    auto fn = fn_;
    auto* ctx = ctx_;
    const int64_t n = n_;
    lk.unlock();
    drain(fn, ctx, n);
    lk.lock();
    if (--busy_ == 0) done_cv_.notify_all();
  }
}

void ThreadPool::run(int64_t n, void (*fn)(void*, int64_t), void* ctx) {
  if (n <= 0) return;
  if (threads_ == 1 || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  std::lock_guard run(run_mu_);
  {
    std::unique_lock lk(mu_);
    // A worker that woke after the previous call returned (all its items claimed, so it waited for nobody)
    // may still hold that call's job: it leaves before the claim counter is reset, or it would claim an
    // item of this call and run it with the old function and context.
    done_cv_.wait(lk, [&] { return busy_ == 0; });
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    ++generation_;
  }
  work_cv_.notify_all();
  drain(fn, ctx, n);
  std::unique_lock lk(mu_);
  // Every item has been claimed; wait for the workers still finishing theirs.
  done_cv_.wait(lk, [&] { return busy_ == 0; });
}

}  // namespace zs::kernels::cpu
