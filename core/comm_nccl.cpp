// NCCL collectives; Work waits poll the completion event and NCCL's async error, bounded by the timeout.
#include "core/comm_nccl.h"

#include <cstring>
#include <thread>

#include "core/cuda_check.h"
#include "core/nccl_check.h"
#include "core/stream_cuda.h"
#include "core/work_pool.h"

namespace zs {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::f64:
      return ncclFloat64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  return ncclSum;
}

}  // namespace

// One collective's completion (its CUDA event), reused for later ones (WorkPool) once done and unreferenced;
// the description for an error is formatted only when one happens.
class NcclWorkState final : public WorkState {
 public:
  NcclWorkState(NcclComm& comm, Device device) : comm_(comm), event_(device) {}
  void reuse(ncclComm_t handle, const CollectiveOp& op) {
    handle_ = handle;
    op_ = op;
  }
  bool done() override { return event_.query(); }
  void wait() override {
    const auto deadline = std::chrono::steady_clock::now() + comm_.timeout();
    while (!event_.query()) {
      ncclResult_t async = ncclSuccess;
      ZS_CHECK_NCCL(ncclCommGetAsyncError(handle_, &async), "{}", what());
      if (async != ncclSuccess && async != ncclInProgress) {
        comm_.abort();
        ZS_FAIL("{} failed: {}; a peer has probably died — see its log", what(), ncclGetErrorString(async));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        comm_.abort();
        ZS_FAIL(
            "{} timed out after {} s (comm.timeout_s); a peer is stuck, slow or gone; the communicator was "
            "aborted",
            what(), comm_.timeout().count() / 1000.0);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  Event& event() override { return event_; }

 private:
  std::string what() const { return fmt::format("rank {}: {}", comm_.rank(), comm_.describe(op_)); }

  NcclComm& comm_;
  ncclComm_t handle_ = nullptr;
  CudaEvent event_;
  CollectiveOp op_;
};

NcclComm::NcclComm(std::shared_ptr<Store> store, int rank, int size, CommOptions opts, Device device)
    : Comm(rank, size, std::move(opts)), device_(device) {
  ZS_CHECK(device.is_cuda(), "the NCCL backend needs a CUDA device, got {}", device.str());
  ZS_CHECK_CUDA(cudaSetDevice(device.index));
  const std::string prefix = "nccl/" + name() + "/";
  await_ranks(*store, prefix);
  ncclUniqueId id;
  const std::string key = prefix + "unique_id";
  if (rank == 0) {
    ZS_CHECK_NCCL(ncclGetUniqueId(&id), "rank 0 creating group '{}'", name());
    store->set(key, std::span(reinterpret_cast<const uint8_t*>(&id), sizeof id));
  } else {
    auto v = store->get(key, options().rendezvous_timeout);
    ZS_CHECK(v.size() == sizeof id, "rank {}: the NCCL id for group '{}' has {} bytes, expected {}", rank, name(),
             v.size(), sizeof id);
    std::memcpy(&id, v.data(), sizeof id);
  }
  ZS_CHECK_NCCL(ncclCommInitRank(&comm_, size, id, rank), "rank {} joining group '{}' of {} ranks", rank, name(), size);
  stream_ = make_stream(device_);
  barrier_scratch_ = Buffer(sizeof(float), MemoryKind::device, device_, MemCategory::comm_scratch);
  states_ = std::make_unique<WorkPool<NcclWorkState>>();
  job_store_ = std::move(store);
}

NcclComm::NcclComm(ncclComm_t comm, int rank, int size, CommOptions opts, Device device)
    : Comm(rank, size, std::move(opts)),
      comm_(comm),
      device_(device),
      stream_(make_stream(device)),
      barrier_scratch_(sizeof(float), MemoryKind::device, device, MemCategory::comm_scratch),
      states_(std::make_unique<WorkPool<NcclWorkState>>()) {}

NcclComm::~NcclComm() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclComm::abort() {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
}

std::unique_ptr<Comm> NcclComm::split(int color, int key) {
  const uint64_t index = splits_++;  // on every rank, joining or not
  ncclComm_t child = nullptr;
  ZS_CHECK_NCCL(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr),
                "rank {} splitting group '{}'", rank(), name());
  if (color < 0 || !child) return nullptr;
  int r = 0, n = 0;
  ZS_CHECK_NCCL(ncclCommUserRank(child, &r), "");
  ZS_CHECK_NCCL(ncclCommCount(child, &n), "");
  CommOptions o{fmt::format("{}/split{}.c{}", name(), index, color), timeout(), options().rendezvous_timeout};
  auto group = std::unique_ptr<NcclComm>(new NcclComm(child, r, n, o, device_));
  group->job_store_ = job_store_;
  return group;
}

Work NcclComm::launch(const CollectiveOp& op, Stream& stream) {
  ZS_CHECK(comm_ != nullptr, "{}: the communicator was aborted after an earlier failure", describe(op));
  std::shared_ptr<NcclWorkState> state =
      states_->acquire([&] { return std::make_shared<NcclWorkState>(*this, device_); });
  state->reuse(comm_, op);
  stream.submit([&] {
    auto s = static_cast<cudaStream_t>(stream.native_handle());
    if (size() == 1) {
      // Over one rank every collective is the identity: a copy when out-of-place, else nothing. NCCL itself is
      // not asked: before 2.29.7 its one-rank reduction leaves the tail of an out-of-place result unwritten
      // (NVIDIA/nccl#1950), which at stage 3 kept a unit's last gradients from the step before.
      if (op.kind != CollectiveKind::barrier && op.out.data != op.in.data)
        ZS_CHECK_CUDA(cudaMemcpyAsync(op.out.data, op.in.data, op.out.bytes(), cudaMemcpyDefault, s));
      return;
    }
    const auto t = nccl_type(op.in.dtype);
    switch (op.kind) {
      case CollectiveKind::all_gather:
        ZS_CHECK_NCCL(ncclAllGather(op.in.data, op.out.data, static_cast<size_t>(op.in.numel()), t, comm_, s), "{}",
                      describe(op));
        break;
      case CollectiveKind::reduce_scatter:
        ZS_CHECK_NCCL(ncclReduceScatter(op.in.data, op.out.data, static_cast<size_t>(op.out.numel()), t,
                                        nccl_op(op.reduce), comm_, s),
                      "{}", describe(op));
        break;
      case CollectiveKind::all_reduce:
        ZS_CHECK_NCCL(
            ncclAllReduce(op.in.data, op.out.data, static_cast<size_t>(op.in.numel()), t, nccl_op(op.reduce), comm_, s),
            "{}", describe(op));
        break;
      case CollectiveKind::broadcast:
        ZS_CHECK_NCCL(ncclBroadcast(op.in.data, op.out.data, static_cast<size_t>(op.in.numel()), t, op.root, comm_, s),
                      "{}", describe(op));
        break;
      case CollectiveKind::barrier: {
        // NCCL has no barrier: an all-reduce of one value orders every rank.
        void* one = barrier_scratch_.data();
        ZS_CHECK_NCCL(ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, comm_, s), "{}", describe(op));
        break;
      }
    }
  });
  stream.record(state->event());
  return Work(std::move(state));
}

}  // namespace zs
