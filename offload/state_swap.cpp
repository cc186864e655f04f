// StateSwap: the file, its reader and writer threads, and the buffers' hand-offs.
#include "offload/state_swap.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"

namespace zs::offload {

namespace {

constexpr const char* kParts[] = {"master", "m", "v"};

}  // namespace

SwapRegion swap_region(int64_t master, int64_t m, int64_t v) {
  SwapRegion r;
  r.bytes = {master, m, v};
  for (std::size_t k = 0; k < 3; ++k) {
    r.offset[k] = r.size;
    r.size += swap_aligned(r.bytes[k]);
  }
  return r;
}

int64_t swap_file_bytes(std::span<const SwapRegion> regions) {
  int64_t total = 0;
  for (const SwapRegion& r : regions) total += r.size;
  return total;
}

int64_t swap_buffer_bytes(std::span<const SwapRegion> regions, int count) {
  int64_t largest = 0;
  for (const SwapRegion& r : regions) largest = std::max(largest, r.size);
  return largest == 0 ? 0 : largest * count + kSwapAlignment;
}

StateSwap::StateSwap(const std::string& dir, int rank, std::vector<SwapRegion> regions, void* buffers, int count)
    : rank_(rank), regions_(std::move(regions)), count_(count) {
  ZS_CHECK(count >= 2, "offload.buffer_count {} must be at least 2 (one buffer is read while another is updated)",
           count);
  ZS_CHECK(!dir.empty(),
           "rank {}: offload.optimizer: nvme needs offload.nvme_path: a directory on a fast local disk for the "
           "optimizer's state",
           rank);
  std::error_code ec;
  ZS_CHECK(std::filesystem::is_directory(dir, ec),
           "rank {}: offload.nvme_path '{}' is not a directory; create it (on a fast local disk) or point "
           "offload.nvme_path at one",
           rank, dir);
  for (const SwapRegion& r : regions_) {
    offset_.push_back(file_bytes_);
    file_bytes_ += r.size;
    slot_ = std::max(slot_, r.size);
  }
  const auto addr = reinterpret_cast<uintptr_t>(buffers);
  base_ = static_cast<char*>(buffers) + (swap_aligned(static_cast<int64_t>(addr)) - static_cast<int64_t>(addr));
  std::string name = fmt::format("{}/zeroshard-optimizer-state.rank{}.XXXXXX", dir, rank);
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  ZS_CHECK(fd_ >= 0, "rank {}: offload.optimizer: nvme could not create its file in '{}': {}; check the permissions",
           rank, dir, detail::sys_error_string(errno));
  path_ = name;
  ::unlink(name.c_str());  // the open descriptor keeps it; nothing outlives the process
  const int flags = ::fcntl(fd_, F_GETFL);
  direct_ = flags != -1 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0;
  if (const int rc = ::posix_fallocate(fd_, 0, std::max<int64_t>(file_bytes_, 1)); rc != 0) {
    struct statvfs fs {};
    const double free_gib = ::fstatvfs(fd_, &fs) == 0
                                ? static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize) / 1073741824.0
                                : -1.0;
    ::close(fd_);
    ZS_CHECK(rc != ENOSPC,
             "rank {}: offload.optimizer: nvme needs {:.2f} GiB of disk in '{}' for this rank's optimizer state, "
             "and {:.2f} GiB are free; free space, point offload.nvme_path at a larger disk, or use more ranks",
             rank, static_cast<double>(file_bytes_) / 1073741824.0, dir, free_gib);
    ZS_FAIL("rank {}: offload.optimizer: nvme could not allocate {} bytes in '{}': {}", rank, file_bytes_, dir,
            detail::sys_error_string(rc));
  }
  if (direct_ && slot_ > 0 && ::pwrite(fd_, base_, kSwapAlignment, 0) != kSwapAlignment) {
    direct_ = false;  // accepted by fcntl but refused on I/O (some filesystems): the page cache it is
    ::fcntl(fd_, F_SETFL, flags);
  }
  unit_of_.resize(2 * regions_.size() + static_cast<std::size_t>(count_));
  after_.resize(unit_of_.size());
  changed_.resize(unit_of_.size());
  last_job_.assign(regions_.size(), -1);
  reader_ = std::thread([this] { run(false); });
  writer_ = std::thread([this] { run(true); });
}

StateSwap::~StateSwap() {
  try {
    drain();
  } catch (const std::exception& e) {
    log::warn("offload: the optimizer state's file failed while shutting down: {}", e.what());
  }
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  reader_.join();
  writer_.join();
  ::close(fd_);
}

StateSwap::Parts StateSwap::parts(int u, char* buffer) const {
  const SwapRegion& r = regions_[static_cast<std::size_t>(u)];
  Parts p{};
  for (std::size_t k = 0; k < 3; ++k) p[k] = r.bytes[k] > 0 ? buffer + r.offset[k] : nullptr;
  return p;
}

void StateSwap::io(bool write, int u, char* buffer) {
  const SwapRegion& r = regions_[static_cast<std::size_t>(u)];
  const int64_t at = offset_[static_cast<std::size_t>(u)];
  for (int64_t done = 0; done < r.size;) {
    const auto n = static_cast<std::size_t>(r.size - done);
    const ssize_t got = write ? ::pwrite(fd_, buffer + done, n, at + done) : ::pread(fd_, buffer + done, n, at + done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = got < 0 ? errno : EIO;  // a read of 0 bytes: the file is shorter than it was allocated
      std::string what;
      for (std::size_t k = 0; k < 3; ++k)
        if (r.bytes[k] > 0) what += fmt::format("{}{}", what.empty() ? "" : ", ", kParts[k]);
      ZS_FAIL(
          "rank {}: offload.optimizer: nvme: {} of unit {}'s optimizer state ({}; {} bytes at offset {}) in '{}' "
          "failed: {}; check the disk (dmesg) and its free space",
          rank_, write ? "writing" : "reading", u, what, r.size, at, path_, detail::sys_error_string(err));
    }
    done += got;
  }
}

void StateSwap::run(bool writer) {
  const auto cap = static_cast<int64_t>(unit_of_.size());
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] {
      if (stop_ || error_) return true;
      if (writer) return written_ < released_;
      // A read needs its buffer's last job written, and its unit's last job (the state it reads).
      return read_ < queued_ && read_ < written_ + count_ && written_ > after_[static_cast<std::size_t>(read_ % cap)];
    });
    if (stop_ || error_) return;  // after an error the swap is unusable; every later call rethrows it
    const int64_t s = writer ? written_ : read_;
    const int u = unit_of_[static_cast<std::size_t>(s % cap)];
    if (writer && !changed_[static_cast<std::size_t>(s % cap)]) {  // unchanged: the disk has it
      ++written_;
      cv_.notify_all();
      continue;
    }
    lk.unlock();
    try {
      io(writer, u, buffer(s));
    } catch (...) {
      lk.lock();
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    lk.lock();
    ++(writer ? written_ : read_);
    cv_.notify_all();
  }
}

void StateSwap::rethrow_locked() const {
  if (error_) std::rethrow_exception(error_);
}

void StateSwap::prefetch(int u) {
  {
    std::unique_lock lk(mu_);
    // The ring holds two steps' jobs and the buffers'; a third step's prefetch waits for the oldest
    // jobs' writes (their acquires were queued before it, so they go on without this thread).
    const auto cap = static_cast<int64_t>(unit_of_.size());
    cv_.wait(lk, [&] { return error_ || queued_ - written_ < cap; });
    rethrow_locked();
    unit_of_[static_cast<std::size_t>(queued_ % cap)] = u;
    int64_t& last = last_job_[static_cast<std::size_t>(u)];
    after_[static_cast<std::size_t>(queued_ % cap)] = last;
    last = queued_++;
    held_ = -1;  // the buffer get() filled may be read into
  }
  cv_.notify_all();
}

StateSwap::Parts StateSwap::acquire(int u) {
  std::unique_lock lk(mu_);
  const auto cap = static_cast<int64_t>(unit_of_.size());
  cv_.wait(lk, [&] { return error_ || read_ > acquired_; });  // prefetched, then read
  rethrow_locked();
  ZS_CHECK(unit_of_[static_cast<std::size_t>(acquired_ % cap)] == u,
           "offload: unit {}'s optimizer state acquired out of its prefetch order (a bug)", u);
  return parts(u, buffer(acquired_++));
}

void StateSwap::release(int u, bool changed) {
  {
    std::lock_guard lk(mu_);
    const auto cap = static_cast<int64_t>(unit_of_.size());
    ZS_CHECK(released_ < acquired_ && unit_of_[static_cast<std::size_t>(released_ % cap)] == u,
             "offload: unit {}'s optimizer state released out of order (a bug)", u);
    changed_[static_cast<std::size_t>(released_ % cap)] = changed;
    ++released_;
  }
  cv_.notify_all();
}

void StateSwap::drain() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return error_ || written_ == queued_; });
  rethrow_locked();
}

StateSwap::Parts StateSwap::get(int u) {
  drain();
  if (held_ != u) {
    held_ = -1;
    io(false, u, base_);
    held_ = u;
  }
  return parts(u, base_);
}

void StateSwap::put(int u) {
  ZS_CHECK(held_ == u, "offload: put({}) without get({}) (a bug)", u, u);
  io(true, u, base_);
}

}  // namespace zs::offload
