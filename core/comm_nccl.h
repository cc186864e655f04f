// The NCCL backend: CUDA buffers, collectives enqueued on CUDA streams (CUDA builds only).
#pragma once

#include <nccl.h>

#include "core/buffer.h"
#include "core/comm.h"

namespace zs {

class NcclWorkState;
template <typename State>
class WorkPool;

class NcclComm final : public Comm {
 public:
  // Collective: rank 0 publishes the NCCL unique id in `store`, every rank joins on `device`.
  NcclComm(std::shared_ptr<Store> store, int rank, int size, CommOptions opts, Device device);
  ~NcclComm() override;

  Backend backend() const override { return Backend::nccl; }
  Device device() const override { return device_; }
  Stream& default_stream() override { return *stream_; }
  std::unique_ptr<Comm> split(int color, int key) override;
  // Aborts the communicator: every pending and future op fails at once (used on timeout).
  void abort();

 protected:
  Work launch(const CollectiveOp& op, Stream& stream) override;

 private:
  NcclComm(ncclComm_t comm, int rank, int size, CommOptions opts, Device device);

  ncclComm_t comm_ = nullptr;
  Device device_;
  std::unique_ptr<Stream> stream_;
  Buffer barrier_scratch_;                           // one float: NCCL has no barrier, so it all-reduces this
  std::unique_ptr<WorkPool<NcclWorkState>> states_;  // the collectives' completions, reused
  uint64_t splits_ = 0;  // splits of this group so far (every rank splits in the same order): in the names
};

}  // namespace zs
