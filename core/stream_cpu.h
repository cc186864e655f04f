// The CPU Stream and Event: a worker thread that runs closures in FIFO order; events are generation counters.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "core/stream.h"

namespace zs {

class CpuEvent final : public Event {
 public:
  Device device() const override { return Device::cpu(); }
  bool query() const override;
  void synchronize() override;

 private:
  friend class CpuStream;
  // One recorded point. Points complete independently: re-recording on a faster stream must not
  // satisfy a wait on an earlier record (cudaStreamWaitEvent semantics).
  struct Point {
    bool done = false;
  };
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::shared_ptr<Point> last;  // null: never recorded, counts as complete
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

class CpuStream final : public Stream {
 public:
  CpuStream();
  ~CpuStream() override;
  Device device() const override { return Device::cpu(); }
  void submit(std::function<void()> fn) override;
  void record(Event& event) override;
  void wait(Event& event) override;
  void synchronize() override;
  void* native_handle() const override { return nullptr; }

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;       // work arrived or stop requested
  std::condition_variable idle_cv_;  // queue drained
  std::deque<std::function<void()>> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace zs
