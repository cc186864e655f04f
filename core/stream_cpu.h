// The CPU Stream and Event: a worker thread that runs work in FIFO order. A stream counts the items it has
// finished; an event is a (stream's counter, count) pair, so recording, waiting and querying allocate
// nothing (the queue is a ring that only grows).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/stream.h"

namespace zs {

// How far a CPU stream has got: items finished, in submission order. Outlives its stream while an event
// or a waiting stream refers to it.
struct CpuStreamProgress {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t done = 0;
  bool reached(uint64_t target) {
    std::lock_guard lk(mu);
    return done >= target;
  }
  void wait_for(uint64_t target) {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return done >= target; });
  }
};

class CpuEvent final : public Event {
 public:
  Device device() const override { return Device::cpu(); }
  bool query() const override;
  void synchronize() override;

 private:
  friend class CpuStream;
  // The recorded point: the stream's progress must reach `target_` (everything submitted before the
  // record). Re-recording replaces it; a wait already issued keeps the point it saw (cudaStreamWaitEvent).
  // Null progress: never recorded, counts as complete.
  std::pair<std::shared_ptr<CpuStreamProgress>, uint64_t> point() const;
  mutable std::mutex mu_;
  std::shared_ptr<CpuStreamProgress> progress_;
  uint64_t target_ = 0;
};

class CpuStream final : public Stream {
 public:
  CpuStream();
  ~CpuStream() override;
  Device device() const override { return Device::cpu(); }
  void submit(Task fn) override;
  void record(Event& event) override;
  void wait(Event& event) override;
  void synchronize() override;
  void* native_handle() const override { return nullptr; }

 private:
  // A closure to run, or (fn empty) another stream's point to wait for.
  struct Item {
    Task fn;
    std::shared_ptr<CpuStreamProgress> wait_on;
    uint64_t target = 0;
  };
  void push(Item item);
  void run();

  std::mutex mu_;
  std::condition_variable cv_;       // work arrived or stop requested
  std::condition_variable idle_cv_;  // queue drained
  std::vector<Item> ring_;           // queue_size_ items from queue_head_, wrapping
  std::size_t queue_head_ = 0, queue_size_ = 0;
  uint64_t submitted_ = 0;  // items ever queued
  bool busy_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::shared_ptr<CpuStreamProgress> progress_ = std::make_shared<CpuStreamProgress>();
  std::thread worker_;
};

}  // namespace zs
