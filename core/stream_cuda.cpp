// CUDA streams and events; submit() runs the closure on the host, which enqueues onto the stream.
#include "core/stream_cuda.h"

#include "core/cuda_check.h"
#include "core/error.h"

namespace zs {

CudaEvent::CudaEvent(Device device) : device_(device) {
  ZS_CHECK_CUDA(cudaSetDevice(device.index));
  ZS_CHECK_CUDA(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
}

CudaEvent::~CudaEvent() {
  if (event_) cudaEventDestroy(event_);
}

bool CudaEvent::query() const {
  cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  ZS_CHECK_CUDA(e);
  return true;
}

void CudaEvent::synchronize() {
  ZS_CHECK_CUDA(cudaEventSynchronize(event_));
}

CudaStream::CudaStream(Device device) : device_(device) {
  ZS_CHECK_CUDA(cudaSetDevice(device.index));
  ZS_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

CudaStream::~CudaStream() {
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaStream::submit(Task fn) {
  ZS_CHECK_CUDA(cudaSetDevice(device_.index));
  fn();
}

static CudaEvent& as_cuda(Event& e) {
  auto* c = dynamic_cast<CudaEvent*>(&e);
  ZS_CHECK(c != nullptr, "a CUDA stream can only record or wait on a CUDA event, got one on {}", e.device().str());
  return *c;
}

void CudaStream::record(Event& event) {
  ZS_CHECK_CUDA(cudaEventRecord(as_cuda(event).handle(), stream_));
}

void CudaStream::wait(Event& event) {
  ZS_CHECK_CUDA(cudaStreamWaitEvent(stream_, as_cuda(event).handle(), 0));
}

void CudaStream::synchronize() {
  ZS_CHECK_CUDA(cudaStreamSynchronize(stream_));
}

}  // namespace zs
