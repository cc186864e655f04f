// Buffer: memory owned from one of three allocators (host, pinned host, device), charged to the ledger.
#pragma once

#include <cstddef>

#include "core/memory_ledger.h"
#include "core/stream.h"
#include "core/tensor_view.h"

namespace zs {

// host: pageable host memory. pinned: page-locked host memory (cudaHostAlloc in CUDA builds).
// device: memory on `device`; for Device::cpu() it is a separate host allocation, which is how the CPU
// build runs the same staging pipelines the GPU build does.
enum class MemoryKind : uint8_t { host, pinned, device };

// Raw allocation with a clear out-of-memory error (bytes asked, category, what the ledger already holds).
void* memory_alloc(MemoryKind kind, Device device, std::size_t bytes, MemCategory category);
void memory_free(MemoryKind kind, Device device, void* ptr) noexcept;
// Bytes that can still be allocated: the device's free memory (CUDA), or the host's MemAvailable (CPU).
int64_t available_memory(Device device);
// A CUDA device's memory in use and in all, as cudaMemGetInfo sees it: every process on the card, and this
// process's CUDA context and library workspaces besides its buffers. {0, 0} for the CPU.
struct DeviceMemoryUse {
  int64_t used = 0, total = 0;
};
DeviceMemoryUse device_memory_use(Device device);

// Synchronous copy between any two memories (host <-> device, device <-> device); for set-up and checks,
// not the hot path (which copies asynchronously on a stream).
void memory_copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);

// The same in `stream`'s order: a memcpy on a CPU stream's thread, cudaMemcpyAsync on a CUDA stream
// (asynchronous to the host when the host side is pinned). For the hot path's staging copies.
void memory_copy_async(void* dst, const void* src, std::size_t bytes, Stream& stream);

// Zeroes `bytes` at p: now on the CPU, enqueued on `stream` (or the default stream) on CUDA.
void memory_zero(void* p, Device device, std::size_t bytes, void* cuda_stream = nullptr);

class Buffer {
 public:
  Buffer() = default;
  Buffer(std::size_t bytes, MemoryKind kind, Device device, MemCategory category,
         MemoryLedger& ledger = MemoryLedger::global());
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  // Memory that a pool owns (a sub-allocation): charged to the ledger like an allocation, never freed
  // here. The pool must outlive the buffer.
  static Buffer borrowed(void* ptr, std::size_t bytes, MemoryKind kind, Device device, MemCategory category,
                         MemoryLedger& ledger = MemoryLedger::global());

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  MemoryKind kind() const { return kind_; }
  // Where the ledger charges it: host and pinned memory count as the host's.
  MemPlace ledger_place() const;
  Device device() const { return device_; }
  // Where the bytes are, for copies and kernels: the device for device memory, the CPU for host memory.
  Device resident() const { return kind_ == MemoryKind::device ? device_ : Device::cpu(); }
  MemCategory category() const { return category_; }
  // The first n elements of the buffer as a 1-D view (n must fit).
  TensorView view(DType dtype, int64_t n) const;

 private:
  void reset() noexcept;

  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  MemoryKind kind_ = MemoryKind::host;
  Device device_;
  MemCategory category_ = MemCategory::other;
  MemoryLedger* ledger_ = nullptr;
  bool owned_ = true;
};

}  // namespace zs
