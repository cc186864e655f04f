// The CUDA Stream and Event: thin owners of cudaStream_t and cudaEvent_t (CUDA builds only).
#pragma once

#include <cuda_runtime_api.h>

#include "core/stream.h"

namespace zs {

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(Device device);
  ~CudaEvent() override;
  Device device() const override { return device_; }
  bool query() const override;
  void synchronize() override;
  cudaEvent_t handle() const { return event_; }

 private:
  Device device_;
  cudaEvent_t event_ = nullptr;
};

class CudaStream final : public Stream {
 public:
  explicit CudaStream(Device device);
  ~CudaStream() override;
  Device device() const override { return device_; }
  void submit(Task fn) override;
  void record(Event& event) override;
  void wait(Event& event) override;
  void synchronize() override;
  void* native_handle() const override { return stream_; }
  cudaStream_t handle() const { return stream_; }

 private:
  Device device_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace zs
