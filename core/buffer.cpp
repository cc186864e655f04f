// Host, pinned and device allocation behind one function pair, and the ledger-charging Buffer.
#include "core/buffer.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "core/error.h"
#ifdef ZS_WITH_CUDA
#include "core/cuda_check.h"
#endif

namespace zs {
namespace {
constexpr std::size_t kHostAlignment = 64;

std::string oom_message(MemoryKind kind, Device device, std::size_t bytes, MemCategory category) {
  const char* what = kind == MemoryKind::host ? "host" : kind == MemoryKind::pinned ? "pinned host" : "device";
  MemStats held = MemoryLedger::global().total(kind == MemoryKind::device ? MemPlace(device) : MemPlace::host_memory());
  return fmt::format(
      "out of memory: allocating {} bytes ({:.3f} GiB) of {} memory on {} for '{}' failed; this process already "
      "holds {:.3f} GiB there. Reduce the model or batch, raise the ZeRO stage, or enable offload",
      bytes, bytes / 1073741824.0, what, device.str(), mem_category_name(category), held.current / 1073741824.0);
}
}  // namespace

void* memory_alloc(MemoryKind kind, Device device, std::size_t bytes, MemCategory category) {
  if (bytes == 0) return nullptr;
#ifdef ZS_WITH_CUDA
  if (kind == MemoryKind::pinned) {
    void* p = nullptr;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
      (void)cudaGetLastError();
      ZS_FAIL("{}", oom_message(kind, device, bytes, category));
    }
    return p;
  }
  if (kind == MemoryKind::device && device.is_cuda()) {
    ZS_CHECK_CUDA(cudaSetDevice(device.index));
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      ZS_FAIL("{}", oom_message(kind, device, bytes, category));
    }
    return p;
  }
#else
  ZS_CHECK(!(kind == MemoryKind::device && device.is_cuda()),
           "cannot allocate on {}: this build of ZeroShard has no CUDA support (configure with -DZS_CUDA=ON)",
           device.str());
#endif
  const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* p = std::aligned_alloc(kHostAlignment, rounded);
  ZS_CHECK(p != nullptr, "{}", oom_message(kind, device, bytes, category));
  return p;
}

int64_t available_memory(Device device) {
#ifdef ZS_WITH_CUDA
  if (device.is_cuda()) {
    const DeviceMemoryUse use = device_memory_use(device);
    return use.total - use.used;
  }
#endif
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(64, '\n');
  }
  return INT64_MAX;  // unknown: do not refuse
}

DeviceMemoryUse device_memory_use(Device device) {
#ifdef ZS_WITH_CUDA
  if (device.is_cuda()) {
    ZS_CHECK_CUDA(cudaSetDevice(device.index));
    std::size_t free = 0, total = 0;
    ZS_CHECK_CUDA(cudaMemGetInfo(&free, &total));
    return {static_cast<int64_t>(total - free), static_cast<int64_t>(total)};
  }
#endif
  (void)device;
  return {};
}

void memory_free(MemoryKind kind, Device device, void* ptr) noexcept {
  if (!ptr) return;
#ifdef ZS_WITH_CUDA
  if (kind == MemoryKind::pinned) {
    cudaFreeHost(ptr);
    return;
  }
  if (kind == MemoryKind::device && device.is_cuda()) {
    cudaFree(ptr);
    return;
  }
#endif
  std::free(ptr);
}

void memory_copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef ZS_WITH_CUDA
  ZS_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  // A copy from pageable memory may return before its DMA lands; callers expect the bytes in place.
  ZS_CHECK_CUDA(cudaStreamSynchronize(cudaStreamLegacy));
#else
  ZS_FAIL("cannot copy between {} and {}: this build has no CUDA support", src_device.str(), dst_device.str());
#endif
}

void memory_copy_async(void* dst, const void* src, std::size_t bytes, Stream& stream) {
  if (bytes == 0) return;
  if (stream.device().is_cpu()) {
    stream.submit([dst, src, bytes] { std::memcpy(dst, src, bytes); });
    return;
  }
#ifdef ZS_WITH_CUDA
  stream.submit([&] {
    ZS_CHECK_CUDA(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(stream.native_handle())));
  });
#else
  ZS_FAIL("cannot copy on a {} stream: this build has no CUDA support", stream.device().str());
#endif
}

void memory_zero(void* p, Device device, std::size_t bytes, void* cuda_stream) {
  if (bytes == 0) return;
  if (device.is_cpu()) {
    std::memset(p, 0, bytes);
    return;
  }
#ifdef ZS_WITH_CUDA
  ZS_CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, static_cast<cudaStream_t>(cuda_stream)));
#else
  (void)cuda_stream;
  ZS_FAIL("cannot zero memory on {}: this build has no CUDA support", device.str());
#endif
}

Buffer::Buffer(std::size_t bytes, MemoryKind kind, Device device, MemCategory category, MemoryLedger& ledger)
    : ptr_(memory_alloc(kind, device, bytes, category)),
      bytes_(bytes),
      kind_(kind),
      device_(device),
      category_(category),
      ledger_(&ledger) {
  ledger_->charge(ledger_place(), category_, static_cast<int64_t>(bytes_));
}

Buffer Buffer::borrowed(void* ptr, std::size_t bytes, MemoryKind kind, Device device, MemCategory category,
                        MemoryLedger& ledger) {
  Buffer b;
  b.ptr_ = ptr;
  b.bytes_ = bytes;
  b.kind_ = kind;
  b.device_ = device;
  b.category_ = category;
  b.ledger_ = &ledger;
  b.owned_ = false;
  ledger.charge(b.ledger_place(), category, static_cast<int64_t>(bytes));
  return b;
}

Buffer::~Buffer() {
  reset();
}

Buffer::Buffer(Buffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)),
      kind_(o.kind_),
      device_(o.device_),
      category_(o.category_),
      ledger_(std::exchange(o.ledger_, nullptr)),
      owned_(o.owned_) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    kind_ = o.kind_;
    device_ = o.device_;
    category_ = o.category_;
    ledger_ = std::exchange(o.ledger_, nullptr);
    owned_ = o.owned_;
  }
  return *this;
}

MemPlace Buffer::ledger_place() const {
  return kind_ == MemoryKind::device ? MemPlace(device_) : MemPlace::host_memory();
}

TensorView Buffer::view(DType dtype, int64_t n) const {
  ZS_CHECK(static_cast<std::size_t>(n) * dtype_size(dtype) <= bytes_,
           "a view of {} {} elements does not fit a buffer of {} bytes", n, dtype_name(dtype), bytes_);
  return TensorView::flat(ptr_, dtype, n, resident());
}

void Buffer::reset() noexcept {
  if (ledger_ && bytes_) ledger_->release(ledger_place(), category_, static_cast<int64_t>(bytes_));
  if (owned_) memory_free(kind_, device_, ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  ledger_ = nullptr;
}

}  // namespace zs
