// Stream and Event: one ordering interface for CPU (a worker thread, FIFO) and CUDA (cudaStream_t/cudaEvent_t).
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "core/device.h"
#include "core/task.h"

namespace zs {

class Stream;

// A point in a stream. record() captures everything submitted to the stream so far; a wait on the event
// (by another stream, or the host) waits for exactly that point, as with cudaEventRecord/cudaStreamWaitEvent.
// An event that was never recorded counts as complete.
class Event {
 public:
  virtual ~Event() = default;
  virtual Device device() const = 0;
  // True when the last recorded point has been reached.
  virtual bool query() const = 0;
  // Blocks the host until the last recorded point has been reached.
  virtual void synchronize() = 0;
};

class Stream {
 public:
  virtual ~Stream() = default;
  virtual Device device() const = 0;

  // Runs `fn` in stream order. CPU: on the stream's worker thread, after all earlier work. CUDA: on the
  // calling thread, at once; `fn` enqueues asynchronous work on native_handle(). Either way the work that
  // `fn` does is ordered after everything submitted before it. An exception thrown by `fn` is kept and
  // rethrown by synchronize(); later work still runs, so events complete and nothing waits forever.
  virtual void submit(Task fn) = 0;
  virtual void record(Event& event) = 0;
  // Work submitted after this call starts only once `event`'s recorded point has been reached.
  virtual void wait(Event& event) = 0;
  // Blocks the host until all submitted work is done; rethrows the first error raised by submitted work.
  virtual void synchronize() = 0;
  // cudaStream_t for CUDA streams, nullptr for CPU streams.
  virtual void* native_handle() const = 0;
};

std::unique_ptr<Stream> make_stream(Device device);
std::unique_ptr<Event> make_event(Device device);

}  // namespace zs
