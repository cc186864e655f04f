// SwapCache: per-unit data on a local disk behind a few host slots (ZeRO-Infinity's NVMe tier):
// offload.params: nvme, the parameters' compute-dtype shards, and offload.grads: nvme, the reduced gradient
// shards. Every unit's data lives in one 4 KiB-aligned region of a SwapFile; host memory keeps `count` slots,
// each the size of the largest region, as a cache of units:
// - the readers (one thread: the gathers, or the CPU step) acquire a unit's slot, use it (the gathers copy it
//   to the device on their stream) and release it; a unit in no slot is read into one first. prefetch() reads
//   ahead the units the next acquires need;
// - the writers (another thread: the CPU step, or the gradients' downloads) fill a unit's slot with its new
//   data (begin_write, ..., finish); a writer thread writes it to the disk behind, and the next acquire takes
//   it from the slot, without a read, while it is still there.
// A unit is in at most one slot, which holds its latest data: a write takes the unit's slot when it has
// one (after its read, its copies out and its last write are done), and a slot is not given to another
// unit while its write is in flight. So a read from the disk never races a write of the same unit, and
// what a read brings in is the last data written.
//
// Which slot a unit gets: an empty one, else the least recently wanted one whose data was used (acquired)
// since it came in, else the least recently wanted one. A prefetch never waits and never takes a slot whose
// data is unused or was wanted in the last `count` requests (prefetches and acquires): it does not push out
// what the next acquires need, nor freshly written data. Data released as not wanted again (the parameters'
// last gather before their next update: the backward's; the gradients, once their update has read them)
// counts as wanted longest ago, so the reads ahead take its slot first. acquire and begin_write wait while
// every slot is busy (in I/O, pinned by an acquire, or being filled); each busy state ends without them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/stream.h"
#include "offload/io_threads.h"
#include "offload/swap_file.h"

namespace zs::offload {

class SwapCache {
 public:
  // What a cache holds: its file's purpose, and the setting that gives `count` (in errors).
  struct Use {
    SwapFile::Purpose file;
    const char* count_setting;
  };
  static constexpr Use kParams{{"offload.params: nvme", "parameters", "params"}, "offload.param_buffer_count"};
  static constexpr Use kGrads{{"offload.grads: nvme", "gradients", "grads"}, "offload.grad_buffer_count"};

  // Creates the file in directory `dir` for `rank`, one region per unit (swap_region(its data's bytes, 0,
  // 0)); `buffers` is host memory of swap_buffer_bytes(regions, count) bytes, the caller's, outliving this.
  // `device`: where the readers' copy streams are. `names`: each region's unit, for errors (swap_unit).
  SwapCache(const std::string& dir, int rank, std::vector<SwapRegion> regions, void* buffers, int count, Device device,
            Use use, std::vector<std::string> names = {});
  ~SwapCache();
  SwapCache(const SwapCache&) = delete;
  SwapCache& operator=(const SwapCache&) = delete;

  // The readers (one thread). prefetch(u): u will be wanted soon; starts its read when a slot is free for
  // it, and returns at once. acquire(u): u's data, in a slot (read now when it is in none), pinned until
  // release(u, copy): the slot may take other data once the work enqueued on `copy` so far (a gather's
  // copy out of it) is done (null: the reader is done with it already); `again`: u may be wanted again
  // before its next write (false: its slot is the first to reuse). acquire throws when a read or write
  // failed.
  void prefetch(int u);
  const void* acquire(int u);
  void release(int u, Stream* copy, bool again = true);
  // The writers (one thread at a time; finish may come from another). begin_write(u): a slot for u's new
  // data, to be filled whole; finish(u): it is filled, and is written to the disk behind.
  void* begin_write(int u);
  void finish(int u);
  // Waits until every read and write is done; rethrows the first I/O failure.
  void drain();

  // Since the last call: acquires, the reads from the disk (prefetched or not), the readers' time blocked
  // in acquire and the writers' in begin_write (every slot busy: the disk behind).
  struct Stats {
    int64_t acquires = 0, reads = 0;
    double wait_ms = 0.0, write_wait_ms = 0.0;
  };
  Stats take_stats();

  int count() const { return count_; }
  const std::string& path() const { return file_.path(); }
  bool direct() const { return file_.direct(); }
  int64_t file_bytes() const { return file_.bytes(); }
  int64_t file_allocated() const { return file_.allocated(); }

 private:
  enum class State : uint8_t { empty, reading, ready, filling };
  struct Slot {
    int unit = -1;
    State state = State::empty;
    bool writing = false;  // its data's write to the disk is queued or running
    bool used = false;     // acquired since it was read or filled
    int pins = 0;
    int64_t wanted = 0;             // requests_ when it was last wanted
    std::unique_ptr<Event> copied;  // the last copy out of it (release)
  };
  // A FIFO of slot numbers, allocated once (each slot is queued at most once per queue).
  struct Queue {
    std::vector<int> ring;
    std::size_t head = 0, size = 0;
    void push(int s) { ring[(head + size++) % ring.size()] = s; }
    int pop() {
      const int s = ring[head];
      head = (head + 1) % ring.size();
      --size;
      return s;
    }
  };
  bool busy(const Slot& s) const {
    return s.state == State::reading || s.state == State::filling || s.writing || s.pins > 0;
  }
  int victim(bool prefetching) const;     // a slot to give another unit, or -1 (under mu_)
  void claim(int s, int u, State state);  // slot s now holds (or will hold) unit u (under mu_)
  void run(bool writer);                  // an I/O thread
  char* slot_data(int s) const { return base_ + static_cast<int64_t>(s) * slot_bytes_; }

  Use use_;
  int count_;
  std::vector<SwapRegion> regions_;
  std::vector<std::string> names_;
  std::vector<int64_t> offset_;  // each unit's region's offset in the file; the file's size last
  int64_t slot_bytes_ = 0;
  SwapFile file_;
  char* base_;
  std::vector<Slot> slots_;
  std::vector<int> slot_of_;  // each unit's slot, or -1
  Queue reads_, writes_;
  int64_t requests_ = 0;
  int in_flight_ = 0;  // reads and writes queued or running
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int64_t> acquires_{0}, reads_done_{0}, wait_ns_{0}, write_wait_ns_{0};
  IoThreads threads_{mu_, cv_};  // last: stopped first
};

}  // namespace zs::offload
