// The Gloo backend: CPU buffers, collectives run on CPU stream threads over Gloo's TCP pairs.
#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "core/buffer.h"
#include "core/comm.h"

namespace gloo {
class Context;
namespace transport {
class Device;
}
}  // namespace gloo

namespace zs {

class GlooWorkState;
struct GlooScratch;
template <typename State>
class WorkPool;

class GlooComm final : public Comm {
 public:
  // Collective: every rank of the group calls it with the same store prefix. `host` is the address
  // peers use to reach this process (loopback for single-node jobs).
  GlooComm(std::shared_ptr<Store> store, int rank, int size, CommOptions opts, const std::string& host);
  ~GlooComm() override;

  // Reductions go through an f32 accumulator of this many elements and a receive area of the same bytes,
  // one pair per stream that runs collectives (ledger category comm_scratch).
  static constexpr int64_t kSegment = int64_t{1} << 20;
  static constexpr int64_t kScratchBytesPerStream = 2 * kSegment * static_cast<int64_t>(sizeof(float));
  // An all-reduce that receives at most this many bytes in all as whole copies (n-1 of them) takes one round
  // instead of a reduce-scatter and an all-gather; the result is the same bit for bit.
  static constexpr int64_t kOneRoundAllReduceBytes = int64_t{64} << 10;

  Backend backend() const override { return Backend::gloo; }
  Device device() const override { return Device::cpu(); }
  Stream& default_stream() override { return *stream_; }
  std::unique_ptr<Comm> split(int color, int key) override;

 protected:
  Work launch(const CollectiveOp& op, Stream& stream) override;

 private:
  GlooComm(std::shared_ptr<Store> root_store, std::shared_ptr<gloo::transport::Device> dev, int rank, int size,
           CommOptions opts);
  void connect();
  void run(const CollectiveOp& op, GlooScratch& scratch);
  GlooScratch& scratch_for(Stream& s);

  std::shared_ptr<Store> root_store_;  // un-prefixed: sub-groups derive their prefixes from it
  std::unique_ptr<Store> store_;       // this group's namespace
  std::shared_ptr<gloo::transport::Device> dev_;
  std::shared_ptr<gloo::Context> ctx_;
  std::unique_ptr<Stream> stream_;
  std::mutex scratch_mu_;
  std::map<Stream*, std::unique_ptr<GlooScratch>> scratch_;
  std::unique_ptr<WorkPool<GlooWorkState>> states_;  // the collectives' completions, reused
  uint64_t splits_ = 0;
};

}  // namespace zs
