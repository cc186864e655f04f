// IoThreads: a file swap's reader and writer threads (StateSwap, SwapCache) and their first failure. Each
// runs the owner's run(writer) until it returns, which it does once stopping() or failed() (read under the
// owner's lock) turns true; after a failure the swap is unusable, and its calls rethrow it.
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <string_view>
#include <thread>

#include "core/log.h"

namespace zs::offload {

class IoThreads {
 public:
  IoThreads(std::mutex& mu, std::condition_variable& cv) : mu_(mu), cv_(cv) {}
  ~IoThreads() { stop(); }
  IoThreads(const IoThreads&) = delete;
  IoThreads& operator=(const IoThreads&) = delete;

  template <typename Run>
  void start(Run run) {
    reader_ = std::thread([run] { run(false); });
    writer_ = std::thread([run] { run(true); });
  }
  bool stopping() const { return stop_ || error_; }
  bool failed() const { return error_ != nullptr; }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }
  // In run(): io() with the owner's lock `lk` released; false when it threw (the failure is kept, the
  // waiters woken, and the thread should return).
  template <typename Io>
  bool unlocked(std::unique_lock<std::mutex>& lk, Io io) {
    lk.unlock();
    try {
      io();
    } catch (...) {
      lk.lock();
      error_ = std::current_exception();
      cv_.notify_all();
      return false;
    }
    lk.lock();
    return true;
  }
  // The owner's destructor: drain() (a failure is logged, naming `what`), then stop the threads.
  template <typename Drain>
  void shut_down(Drain drain, std::string_view what) {
    try {
      drain();
    } catch (const std::exception& e) {
      log::shutdown_failure(fmt::format("offload: {} failed while shutting down", what), e);
    }
    stop();
  }

 private:
  void stop() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
  }

  std::mutex& mu_;
  std::condition_variable& cv_;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread reader_, writer_;
};

}  // namespace zs::offload
