// The CPU kernels' thread pool: every item of every parallel_for runs exactly once, within that call. A
// worker that wakes late, after its call has returned, must not run anything of the next call with the
// old call's function and context (it once could: the claim counter is shared, so the late worker took an
// item of the next call and ran it on the finished call's context, a dangling stack address in the engine).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "kernels/kernels.h"

namespace zs::kernels::cpu {
namespace {

struct Job {
  std::atomic<int> calls[2] = {0, 0};
  std::atomic<bool> returned{false};
};

TEST(ThreadPool, EveryItemRunsOnceWithinItsCall) {
  const int before = cpu_threads();
  set_cpu_threads(8);  // more workers than cores: preempted workers wake late
  ThreadPool& pool = ThreadPool::instance();
  std::atomic<int> late{0};
  // Each call's function object lives on the heap, at its own address, and outlives the call, so an item
  // run with a finished call's context is counted (as late, and as missing from the call it belonged to)
  // instead of landing on whatever the stack holds.
  struct Fn {
    Job* job;
    std::atomic<int>* late;
    void operator()(int64_t i) const {
      if (job->returned.load()) late->fetch_add(1);
      job->calls[i].fetch_add(1);
    }
  };
  constexpr int kCalls = 100000;
  std::vector<std::unique_ptr<Job>> jobs;
  std::vector<std::unique_ptr<Fn>> fns;
  jobs.reserve(kCalls);
  fns.reserve(kCalls);
  int wrong = 0;
  for (int c = 0; c < kCalls; ++c) {
    jobs.push_back(std::make_unique<Job>());
    fns.push_back(std::make_unique<Fn>(Fn{jobs.back().get(), &late}));
    pool.parallel_for(2, *fns.back());
    jobs.back()->returned.store(true);
    if (jobs.back()->calls[0].load() != 1 || jobs.back()->calls[1].load() != 1) ++wrong;
  }
  set_cpu_threads(before);
  EXPECT_EQ(late.load(), 0) << "items run after their parallel_for returned";
  EXPECT_EQ(wrong, 0) << "calls whose items did not each run once before it returned";
}

}  // namespace
}  // namespace zs::kernels::cpu
