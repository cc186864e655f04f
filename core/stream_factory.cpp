// make_stream / make_event: pick the CPU or CUDA implementation for a device.
#include "core/error.h"
#include "core/stream_cpu.h"
#ifdef ZS_WITH_CUDA
#include "core/stream_cuda.h"
#endif

namespace zs {

std::unique_ptr<Stream> make_stream(Device device) {
  if (device.is_cpu()) return std::make_unique<CpuStream>();
#ifdef ZS_WITH_CUDA
  return std::make_unique<CudaStream>(device);
#else
  ZS_FAIL("cannot create a stream on {}: this build has no CUDA support", device.str());
#endif
}

std::unique_ptr<Event> make_event(Device device) {
  if (device.is_cpu()) return std::make_unique<CpuEvent>();
#ifdef ZS_WITH_CUDA
  return std::make_unique<CudaEvent>(device);
#else
  ZS_FAIL("cannot create an event on {}: this build has no CUDA support", device.str());
#endif
}

}  // namespace zs
