// HostPool: one allocation, parts handed out in order.
#include "offload/host_pool.h"

#include <utility>

#include "core/error.h"

namespace zs::offload {

HostPool::HostPool(int64_t bytes, bool pinned, Device device)
    : bytes_(bytes), kind_(pinned ? MemoryKind::pinned : MemoryKind::host), device_(device) {
  base_ = memory_alloc(kind_, device_, static_cast<std::size_t>(bytes), MemCategory::offload_staging);
}

HostPool::~HostPool() {
  free();
}

void HostPool::free() noexcept {
  memory_free(kind_, device_, base_);
  base_ = nullptr;
  bytes_ = used_ = 0;
}

HostPool::HostPool(HostPool&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)),
      used_(std::exchange(o.used_, 0)),
      kind_(o.kind_),
      device_(o.device_) {}

HostPool& HostPool::operator=(HostPool&& o) noexcept {
  if (this != &o) {
    free();
    base_ = std::exchange(o.base_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    used_ = std::exchange(o.used_, 0);
    kind_ = o.kind_;
    device_ = o.device_;
  }
  return *this;
}

Buffer HostPool::take(int64_t bytes, MemCategory category) {
  if (bytes == 0) return {};
  const int64_t part = pool_part_bytes(bytes);
  ZS_CHECK(used_ + part <= bytes_,
           "offload host pool: a {} part of {} bytes does not fit ({} of {} bytes used); the pool is sized from the "
           "memory plan, so this is a bug in the plan",
           mem_category_name(category), bytes, used_, bytes_);
  void* p = static_cast<char*>(base_) + used_;
  used_ += part;
  return Buffer::borrowed(p, static_cast<std::size_t>(bytes), kind_, device_, category);
}

}  // namespace zs::offload
