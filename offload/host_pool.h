// HostPool: the offload tier's host memory. One pinned (or pageable) allocation made at start-up and
// handed out in aligned parts, each charged to the ledger on the host under its own category, so there
// is one page-locking call per run and no allocation per step.
#pragma once

#include <cstdint>

#include "core/buffer.h"

namespace zs::offload {

inline constexpr int64_t kHostPoolAlignment = 64;  // every part starts on a cache line

// Bytes a part of `bytes` occupies in the pool.
constexpr int64_t pool_part_bytes(int64_t bytes) {
  return (bytes + kHostPoolAlignment - 1) / kHostPoolAlignment * kHostPoolAlignment;
}

class HostPool {
 public:
  HostPool() = default;
  // pinned: page-locked (cudaHostAlloc in CUDA builds) so copies to and from the device run asynchronously.
  HostPool(int64_t bytes, bool pinned, Device device);
  ~HostPool();
  HostPool(HostPool&& o) noexcept;
  HostPool& operator=(HostPool&& o) noexcept;
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  // The next part of `bytes` (an empty Buffer for 0); the pool must outlive it. Throws when it is used up.
  Buffer take(int64_t bytes, MemCategory category);
  int64_t capacity() const { return bytes_; }
  int64_t used() const { return used_; }

 private:
  void free() noexcept;
  void* base_ = nullptr;
  int64_t bytes_ = 0, used_ = 0;
  MemoryKind kind_ = MemoryKind::pinned;
  Device device_;
};

}  // namespace zs::offload
