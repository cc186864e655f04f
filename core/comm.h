// Comm: one process group with async collectives (all_gather, reduce_scatter, all_reduce, broadcast, barrier).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/buffer.h"
#include "core/store.h"
#include "core/stream.h"
#include "core/tensor_view.h"

namespace zs {

enum class ReduceOp : uint8_t { sum, avg, max };
enum class Backend : uint8_t { gloo, nccl };
std::string_view reduce_op_name(ReduceOp op);
std::string_view backend_name(Backend b);

enum class CollectiveKind : uint8_t { all_gather, reduce_scatter, all_reduce, broadcast, barrier };
std::string_view collective_name(CollectiveKind k);

// Everything a backend needs to run one collective; `seq` is the group's per-op counter, identical on
// every rank because ranks issue collectives in the same program order.
struct CollectiveOp {
  CollectiveKind kind = CollectiveKind::barrier;
  uint64_t seq = 0;
  TensorView in;
  TensorView out;
  ReduceOp reduce = ReduceOp::sum;
  int root = 0;
};

// The completion state of one collective, implemented by each backend.
class WorkState {
 public:
  virtual ~WorkState() = default;
  virtual bool done() = 0;
  // Blocks until done; throws zs::Error (op, sequence number, group, peer) if the collective failed or
  // did not finish within the group's timeout.
  virtual void wait() = 0;
  // The completion point on the stream the op ran on; another stream may wait on it.
  virtual Event& event() = 0;
};

// Handle to an asynchronous collective. A default-constructed Work is complete.
class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<WorkState> s) : state_(std::move(s)) {}
  void wait() {
    if (state_) state_->wait();
  }
  bool is_done() const { return !state_ || state_->done(); }
  Event* event() const { return state_ ? &state_->event() : nullptr; }

 private:
  std::shared_ptr<WorkState> state_;
};

struct CommOptions {
  std::string name = "world";
  Millis timeout{300000};             // comm.timeout_s: per collective
  Millis rendezvous_timeout{300000};  // joining the group (every rank must arrive within it)
};

class Comm {
 public:
  virtual ~Comm() = default;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return opts_.name; }
  Millis timeout() const { return opts_.timeout; }
  const CommOptions& options() const { return opts_; }
  virtual Backend backend() const = 0;
  virtual Device device() const = 0;
  // The stream collectives run on when none is given.
  virtual Stream& default_stream() = 0;

  // out_full = concat over ranks of in_shard; in-place when in_shard aliases out_full's slice for this rank.
  Work all_gather(TensorView in_shard, TensorView out_full, Stream* stream = nullptr);
  // out_shard = reduce over ranks of in_full's slice for this rank; in-place when out_shard aliases that slice.
  // Moves reduce-scatter volume: each rank sends and receives (N-1)/N of in_full.
  Work reduce_scatter(TensorView in_full, TensorView out_shard, ReduceOp op, Stream* stream = nullptr);
  Work all_reduce(TensorView in, TensorView out, ReduceOp op, Stream* stream = nullptr);
  Work broadcast(TensorView buf, int root, Stream* stream = nullptr);
  Work barrier(Stream* stream = nullptr);
  // A host value (a loss, a count) reduced over the group; blocks. Staged through the group's own memory
  // when its backend reduces device memory only (NCCL), so an app needs no device buffer of its own.
  float all_reduce_value(float value, ReduceOp op);

  // Ranks passing the same color form a new group, ordered by (key, rank); color < 0 joins no group
  // and returns nullptr. Collective over this group.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;

  // "all_gather #17 on group 'world' (rank 1 of 4, 4096 x bf16)", for error messages.
  std::string describe(const CollectiveOp& op) const;

  // The store the group met through: for control messages outside the collectives' order (a background
  // checkpoint's commit). Keys under "ckpt/" are the engine's.
  const std::shared_ptr<Store>& store() const { return job_store_; }

 protected:
  Comm(int rank, int size, CommOptions opts) : rank_(rank), size_(size), opts_(std::move(opts)) {}
  // Group creation's first step in every backend: each rank sets `prefix`joined/<rank> and waits for the
  // others' within the rendezvous timeout, so a rank that never arrives is named in an error instead of
  // stalling the backend's own connection set-up.
  void await_ranks(Store& store, const std::string& prefix) const;
  virtual Work launch(const CollectiveOp& op, Stream& stream) = 0;

  std::shared_ptr<Store> job_store_;  // set by the backend's constructor

 private:
  Work issue(CollectiveOp op, Stream* stream);

  int rank_;
  int size_;
  CommOptions opts_;
  std::atomic<uint64_t> seq_{0};
  Buffer value_slot_;  // all_reduce_value's staging on a device group, allocated at first use
};

// Store-based split: every rank publishes (color, key); returns this rank's new (rank, size, name) or
// rank -1 when color < 0. Shared by the backends that have no native split.
struct SplitPlan {
  int rank = -1;
  int size = 0;
  std::string name;
};
SplitPlan plan_split(Store& store, const Comm& parent, uint64_t split_index, int color, int key);

}  // namespace zs
