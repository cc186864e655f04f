// CPU streams and events: FIFO order and every cross-stream wait respected, over many random DAGs.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/stream.h"
#include "tests/count_allocations.h"

namespace zs {
namespace {

// Task keeps its closure in place: no allocation, its captures destroyed exactly once (on reset, on
// destruction, or by the task it moved into), and an empty task from nullptr.
TEST(Task, HoldsMovesAndDestroysItsClosureInPlace) {
  auto token = std::make_shared<int>(0);
  const int64_t before = test::g_allocations.load();
  {
    int ran = 0;
    Task a([token, &ran, x = std::array<int64_t, 4>{1, 2, 3, 4}] { ran += static_cast<int>(x[3]) + *token; });
    EXPECT_EQ(token.use_count(), 2);
    Task b(std::move(a));
    EXPECT_FALSE(a);
    ASSERT_TRUE(b);
    b();
    EXPECT_EQ(ran, 4);
    EXPECT_EQ(token.use_count(), 2);  // moved, not copied
    Task c = nullptr;
    EXPECT_FALSE(c);
    c = std::move(b);
    c();
    EXPECT_EQ(ran, 8);
    c.reset();
    EXPECT_EQ(token.use_count(), 1);
    Task d([token] {});
  }
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_EQ(test::g_allocations.load(), before);
}

TEST(CpuStream, RunsInFifoOrderAndSynchronizes) {
  auto s = make_stream(Device::cpu());
  std::vector<int> seen;
  for (int i = 0; i < 1000; ++i) s->submit([&seen, i] { seen.push_back(i); });
  s->synchronize();
  ASSERT_EQ(seen.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(seen[static_cast<std::size_t>(i)], i);
}

TEST(CpuStream, ErrorsSurfaceAtSynchronizeAndLaterWorkStillRuns) {
  auto s = make_stream(Device::cpu());
  auto e = make_event(Device::cpu());
  bool ran = false;
  s->submit([] { throw Error("boom"); });
  s->submit([&] { ran = true; });
  s->record(*e);
  e->synchronize();
  EXPECT_TRUE(ran);
  EXPECT_THROW(s->synchronize(), Error);
  EXPECT_NO_THROW(s->synchronize());  // reported once
}

TEST(CpuEvent, UnrecordedEventIsComplete) {
  auto e = make_event(Device::cpu());
  EXPECT_TRUE(e->query());
  e->synchronize();
}

TEST(CpuEvent, HostWaitsForTheRecordedPointOnly) {
  auto s = make_stream(Device::cpu());
  auto e = make_event(Device::cpu());
  std::atomic<bool> release{false};
  std::atomic<int> done{0};
  s->submit([&] { done = 1; });
  s->record(*e);
  s->submit([&] {
    while (!release) std::this_thread::yield();
  });
  e->synchronize();  // must not wait for the blocked task after the record
  EXPECT_EQ(done.load(), 1);
  EXPECT_TRUE(e->query());
  s->record(*e);
  EXPECT_FALSE(e->query());
  release = true;
  e->synchronize();
  EXPECT_TRUE(e->query());
}

// The hot path's stream traffic (a closure as small as the engine's, record, a cross-stream wait, host
// synchronize and query) allocates nothing once the queues have their size.
TEST(CpuStream, RecordWaitAndSubmitAllocateNothingOnceWarm) {
  auto a = make_stream(Device::cpu()), b = make_stream(Device::cpu());
  auto e = make_event(Device::cpu()), f = make_event(Device::cpu());
  int64_t x = 0;
  auto round = [&] {
    a->submit([&x] { ++x; });
    a->record(*e);
    b->wait(*e);
    b->submit([&x] { x += 2; });
    b->record(*f);
    f->synchronize();
    (void)e->query();
  };
  for (int i = 0; i < 100; ++i) round();
  const int64_t before = test::g_allocations.load();
  for (int i = 0; i < 1000; ++i) round();
  EXPECT_EQ(test::g_allocations.load() - before, 0);
  EXPECT_EQ(x, 3 * 1100);
}

// Random DAG: tasks on several streams, events re-recorded at random, random waits. Every task stamps a
// global clock; each stream must be FIFO and every task after a wait must follow the task the event captured.
TEST(CpuStream, RandomDagsRespectEveryOrderingEdge) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    const int nstreams = 2 + trial % 4, nevents = 3, ntasks = 200;
    std::vector<std::unique_ptr<Stream>> streams;
    std::vector<std::unique_ptr<Event>> events;
    for (int i = 0; i < nstreams; ++i) streams.push_back(make_stream(Device::cpu()));
    for (int i = 0; i < nevents; ++i) events.push_back(make_event(Device::cpu()));
    std::atomic<int64_t> clock{0};
    std::vector<int64_t> stamp(ntasks, -1);
    std::vector<int> last_task(static_cast<std::size_t>(nstreams), -1);      // last task submitted per stream
    std::vector<int> event_point(static_cast<std::size_t>(nevents), -1);     // task each event captured
    std::vector<std::pair<int, int>> edges;                                  // (before, after)
    std::vector<int> pending_after(static_cast<std::size_t>(nstreams), -1);  // a wait applies to the next task
    std::vector<std::vector<int>> waits(static_cast<std::size_t>(nstreams));
    for (int t = 0; t < ntasks; ++t) {
      const auto si = static_cast<std::size_t>(rng() % static_cast<unsigned>(nstreams));
      if (rng() % 3 == 0) {
        const auto ei = static_cast<std::size_t>(rng() % nevents);
        streams[si]->wait(*events[ei]);
        if (event_point[ei] >= 0) waits[si].push_back(event_point[ei]);
      }
      for (int before : waits[si]) edges.push_back({before, t});
      waits[si].clear();
      if (last_task[si] >= 0) edges.push_back({last_task[si], t});
      const int spin = static_cast<int>(rng() % 200);
      streams[si]->submit([&, t, spin] {
        std::this_thread::sleep_for(std::chrono::microseconds(spin));
        stamp[static_cast<std::size_t>(t)] = ++clock;
      });
      last_task[si] = t;
      if (rng() % 4 == 0) {
        const auto ei = static_cast<std::size_t>(rng() % nevents);
        streams[si]->record(*events[ei]);
        event_point[ei] = t;
      }
    }
    for (auto& s : streams) s->synchronize();
    for (int64_t s : stamp) ASSERT_GT(s, 0);
    for (auto [before, after] : edges)
      ASSERT_LT(stamp[static_cast<std::size_t>(before)], stamp[static_cast<std::size_t>(after)])
          << "trial " << trial << ": task " << after << " ran before task " << before;
  }
}

}  // namespace
}  // namespace zs
