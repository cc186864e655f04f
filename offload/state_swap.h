// StateSwap: the optimizer state on a local disk (offload.optimizer: nvme, ZeRO-Infinity's NVMe tier). Every
// offloaded unit's f32 master, m and v live in one region of a file; the host keeps `count` buffers, each
// the size of the largest region. Ahead of a unit's CPU update a reader thread reads its region into the
// next buffer; behind the update a writer thread writes the buffer back, and the buffer then takes the next
// read. The disk streams both ways while the CPU updates, and host memory holds `count` units' state instead
// of all of it.
//
// The file is a SwapFile (offload/swap_file.h: unlinked at once, allocated up front, O_DIRECT); regions,
// offsets and buffers are 4 KiB aligned for it.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "offload/io_threads.h"
#include "offload/swap_file.h"

namespace zs::offload {

class StateSwap {
 public:
  using Parts = std::array<void*, 3>;  // a unit's master, m and v in a buffer (null where its region has none)

  // Creates the file in directory `dir` (it must exist), named for `rank`, and allocates it; `buffers` is
  // host memory of swap_buffer_bytes(regions, count) bytes, the caller's, outliving this. count >= 2.
  // `names`: each region's unit, for errors (swap_unit).
  StateSwap(const std::string& dir, int rank, std::vector<SwapRegion> regions, void* buffers, int count,
            std::vector<std::string> names = {});
  ~StateSwap();
  StateSwap(const StateSwap&) = delete;
  StateSwap& operator=(const StateSwap&) = delete;

  // The step. prefetch(u) queues unit u's region to be read into the next buffer and returns (at once,
  // unless two steps' jobs are still queued: then once the oldest is written); acquire(u) waits until it
  // is there; release(u) queues the write-back, after which the buffer takes the next read. One thread
  // acquires and releases the units in the order they were prefetched, every one of them. acquire throws
  // when a read or write failed.
  // release(u, false): the state was not changed (a skipped step), so it is not written back.
  void prefetch(int u);
  Parts acquire(int u);
  void release(int u, bool changed = true);
  // Waits until every prefetched unit is back on the disk; rethrows the first I/O failure.
  void drain();
  // Between steps: unit u's region, read into a buffer now (again only when another unit was read or the
  // step ran since); put(u) writes that buffer back now.
  Parts get(int u);
  void put(int u);

  const SwapRegion& region(int u) const { return regions_[static_cast<std::size_t>(u)]; }
  const std::string& path() const { return file_.path(); }  // the name it was created under (unlinked)
  bool direct() const { return file_.direct(); }            // O_DIRECT (false where the filesystem refused it)
  int64_t file_bytes() const { return file_.bytes(); }
  int64_t file_allocated() const { return file_.allocated(); }

 private:
  void run(bool writer);                     // an I/O thread: the reads, or the writes
  void io(bool write, int u, char* buffer);  // one whole region, synchronously; throws naming the op
  char* buffer(int64_t seq) const { return base_ + (seq % count_) * slot_; }
  Parts parts(int u, char* buffer) const;

  int count_;
  std::vector<SwapRegion> regions_;
  std::vector<std::string> names_;
  std::vector<int64_t> offset_;  // each region's offset in the file, and the file's size last
  int64_t slot_ = 0;
  SwapFile file_;
  char* base_ = nullptr;
  // Jobs in prefetch order; job s uses buffer s % count_. Counts of jobs queued, read, acquired, released
  // and written (in that order, each by one thread): written_ <= released_ <= acquired_ <= read_ <= queued_.
  // A read starts once the job count_ before it (its buffer's) and the last job of its unit (the state it
  // reads) are written. unit_of_ and after_ (that last job's number, or -1) are rings, allocated once, over
  // the jobs not yet written (two steps' and the buffers': prefetch waits beyond); last_job_ is each unit's
  // latest job.
  std::vector<int> unit_of_;
  std::vector<int64_t> after_, last_job_;
  std::vector<char> changed_;  // ring: the job's release changed the state (else the writer skips it)
  int64_t queued_ = 0, read_ = 0, acquired_ = 0, released_ = 0, written_ = 0;
  int held_ = -1;  // get(): the unit in buffer 0 between steps
  mutable std::mutex mu_;
  std::condition_variable cv_;
  IoThreads threads_{mu_, cv_};  // last: stopped first
};

}  // namespace zs::offload
