// The CPU kernels' thread pool: fixed workers, the caller takes part, no allocation per parallel_for.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace zs::kernels::cpu {

class ThreadPool {
 public:
  static ThreadPool& instance();
  ~ThreadPool();
  // Total threads running a parallel_for, the caller included (>= 1).
  void set_threads(int n);
  // The same, unless ZS_CPU_THREADS chose the count: a caller's default, not the user's choice.
  void set_default_threads(int n);
  int threads() const { return threads_; }

  // Calls f(i) for every i in [0, n), spread over the threads; returns when all calls are done.
  template <typename F>
  void parallel_for(int64_t n, F&& f) {
    using Fn = std::remove_reference_t<F>;
    run(
        n, [](void* ctx, int64_t i) { (*static_cast<Fn*>(ctx))(i); }, const_cast<void*>(static_cast<const void*>(&f)));
  }

 private:
  ThreadPool();
  void run(int64_t n, void (*fn)(void*, int64_t), void* ctx);
  void worker();
  void stop_workers();
  void drain(void (*fn)(void*, int64_t), void* ctx, int64_t n);

  int threads_ = 1;
  bool chosen_ = false;  // ZS_CPU_THREADS set the count
  std::mutex run_mu_;    // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  int busy_ = 0;
  void (*fn_)(void*, int64_t) = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::vector<std::thread> workers_;
};

}  // namespace zs::kernels::cpu
