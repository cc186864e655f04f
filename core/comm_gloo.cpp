// Gloo collectives: reduce-scatter and all-gather on unbound buffers, every rank sending to every rank at
// once (one round of latency, the ring's bytes), all-reduce as the two, bf16/f16 reduced in f32 in rank order,
// every wait bounded by the group's timeout.
#include "core/comm_gloo.h"

#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "core/chunks.h"
#include "core/error.h"
#include "core/stream_cpu.h"
#include "core/work_pool.h"

namespace zs {

// One collective's completion, reused for later ones (WorkPool) once done and unreferenced.
class GlooWorkState final : public WorkState {
 public:
  // Makes the state describe a new collective (it is done and unreferenced: nothing else reads it).
  void reuse(const CollectiveOp& op) {
    std::lock_guard lk(mu_);
    done_ = false;
    error_.clear();
    op_ = op;
  }
  const CollectiveOp& op() const { return op_; }
  bool done() override {
    std::lock_guard lk(mu_);
    return done_;
  }
  void wait() override {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return done_; });
    if (!error_.empty()) throw Error(error_);
  }
  Event& event() override { return event_; }
  void finish(const char* error) {
    std::lock_guard lk(mu_);
    done_ = true;
    if (error) error_ = error;
    cv_.notify_all();  // under the lock: once it is released the state may be reused
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = true;
  std::string error_;
  CpuEvent event_;
  CollectiveOp op_;
};

using Unbound = gloo::transport::UnboundBuffer;

// A transfer posted and not yet waited for: `peer` is the rank it goes to or comes from.
struct PendingTransfer {
  Unbound* buf;
  int peer;
  bool is_recv;
};

// A stream's collective staging: an f32 accumulator segment and a receive area of the same size (ledger
// comm_scratch), the unbound buffers of the tensors it has moved (the engine's gather and gradient buffers
// come back every step) and its list of pending transfers, so a steady step creates none.
struct GlooScratch {
  explicit GlooScratch(std::size_t segment_bytes)
      : mem(2 * segment_bytes, MemoryKind::host, Device::cpu(), MemCategory::comm_scratch), segment(segment_bytes) {}
  float* acc() { return static_cast<float*>(mem.data()); }
  char* recv_area() { return static_cast<char*>(mem.data()) + segment; }
  // The unbound buffer over [ptr, ptr + bytes) for traffic with `peer`, made on first use: one per peer, so
  // each wait names the rank it waits on. One that no longer exists costs only its entry (an unbound buffer
  // touches its memory only while an operation on it is pending).
  Unbound& over(gloo::Context& ctx, void* ptr, std::size_t bytes, int peer) {
    const Key key{ptr, bytes, peer};
    auto it = seen.find(key);
    if (it != seen.end()) return *it->second;
    return *seen.emplace(key, ctx.createUnboundBuffer(ptr, bytes)).first->second;
  }
  // Before a collective of an n-rank group (which makes at most 3n buffers, and none of the previous one's is
  // still pending): a program that moves ever new tensors starts the cache again.
  void trim(int n) {
    if (seen.size() + 3 * static_cast<std::size_t>(n) > kMaxSeen) seen.clear();
  }
  static constexpr std::size_t kMaxSeen = 4096;
  using Key = std::tuple<const void*, std::size_t, int>;
  Buffer mem;
  std::size_t segment;
  std::map<Key, std::unique_ptr<Unbound>> seen;
  std::vector<PendingTransfer> pending;
};

namespace {

constexpr uint8_t kSlotPrefix = 0x40;
// A one-round all-reduce's copies fit the receive area and its elements the accumulator.
static_assert(GlooComm::kOneRoundAllReduceBytes <= GlooComm::kSegment * static_cast<int64_t>(sizeof(float)));
constexpr uint64_t kConnectTag = 0xffffffffu;  // never reached by a group's op counter in practice

// Adapts our Store to Gloo's rendezvous interface (Gloo's own waits take no deadline of ours).
class GlooStore final : public gloo::rendezvous::Store {
 public:
  GlooStore(zs::Store& s, Millis timeout) : s_(s), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    s_.set(key, std::span(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = s_.get(key, timeout_);
    return {v.begin(), v.end()};
  }
  void wait(const std::vector<std::string>& keys) override { s_.wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override {
    s_.wait(keys, timeout_);
  }

 private:
  zs::Store& s_;
  Millis timeout_;
};

// One collective's point-to-point traffic: transfers are posted (receives first, so the peers hear early
// that this rank is ready) and then waited for together, with errors that name the op (or, with none, the
// group's connection) and the peer; the description is formatted only for an error.
class Peers {
 public:
  Peers(gloo::Context& ctx, uint64_t seq, Millis timeout, const Comm& comm, const CollectiveOp* op,
        std::vector<PendingTransfer>& pending)
      : ctx_(ctx),
        slot_(gloo::Slot::build(kSlotPrefix, static_cast<uint32_t>(seq))),
        timeout_(timeout),
        comm_(comm),
        op_(op),
        pending_(pending) {
    pending_.clear();
  }

  int rank() const { return ctx_.rank; }
  int size() const { return ctx_.size; }

  // Posts a receive of `bytes` from `src` into `buf` at `at`, or a send of them to `dst`; nothing for none.
  void recv(Unbound& buf, std::size_t at, std::size_t bytes, int src) { post(buf, at, bytes, src, true); }
  void send(Unbound& buf, std::size_t at, std::size_t bytes, int dst) { post(buf, at, bytes, dst, false); }

  // Waits for every posted transfer, receives first: a peer that never sends is the one a timeout names.
  void wait() {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (const PendingTransfer& t : pending_)
      if (t.is_recv) finish(t, deadline);
    for (const PendingTransfer& t : pending_)
      if (!t.is_recv) finish(t, deadline);
    pending_.clear();
  }

 private:
  void post(Unbound& buf, std::size_t at, std::size_t bytes, int peer, bool is_recv) {
    if (bytes == 0) return;
    try {
      if (is_recv)
        buf.recv(peer, slot_, at, bytes);
      else
        buf.send(peer, slot_, at, bytes);
    } catch (const gloo::Exception& e) {
      ZS_FAIL("{} failed: the connection to rank {} broke ({}); that rank has probably died — see its log", what(),
              peer, e.what());
    }
    pending_.push_back({&buf, peer, is_recv});
  }

  void finish(const PendingTransfer& t, std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    try {
      if (t.is_recv)
        t.buf->waitRecv(std::max(left, Millis(1)));
      else
        t.buf->waitSend(std::max(left, Millis(1)));
    } catch (const gloo::Exception& e) {
      if (std::chrono::steady_clock::now() >= deadline)
        ZS_FAIL(
            "{} timed out after {} s waiting to {} rank {}; that rank is stuck, slow or gone (comm.timeout_s "
            "sets the limit)",
            what(), timeout_.count() / 1000.0, t.is_recv ? "receive from" : "send to", t.peer);
      ZS_FAIL("{} failed while {} rank {}: {}; that rank has probably died — see its log", what(),
              t.is_recv ? "receiving from" : "sending to", t.peer, e.what());
    }
  }
  std::string what() const {
    return op_ ? fmt::format("rank {}: {}", comm_.rank(), comm_.describe(*op_))
               : fmt::format("rank {}: connecting group '{}'", comm_.rank(), comm_.name());
  }

  gloo::Context& ctx_;
  uint64_t slot_;
  Millis timeout_;
  const Comm& comm_;
  const CollectiveOp* op_;
  std::vector<PendingTransfer>& pending_;
};

// Element access with the dtype fixed at compile time, so the reduction loops vectorise.
template <DType T>
float ld(const void* p, int64_t i) {
  if constexpr (T == DType::f32)
    return static_cast<const float*>(p)[i];
  else if constexpr (T == DType::bf16)
    return bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
  else
    return f16_bits_to_f32(static_cast<const uint16_t*>(p)[i]);
}
template <DType T>
void st(void* p, int64_t i, float v) {
  if constexpr (T == DType::f32)
    static_cast<float*>(p)[i] = v;
  else if constexpr (T == DType::bf16)
    static_cast<uint16_t*>(p)[i] = f32_to_bf16_bits(v);
  else
    static_cast<uint16_t*>(p)[i] = f32_to_f16_bits(v);
}

// acc[i] = acc[i] (op) src[i] in f32 for i < len; the first contribution sets acc.
template <DType T>
void accumulate(float* acc, const void* src, int64_t len, ReduceOp op, bool first) {
  if (first)
    for (int64_t i = 0; i < len; ++i) acc[i] = ld<T>(src, i);
  else if (op == ReduceOp::max)
    for (int64_t i = 0; i < len; ++i) acc[i] = std::max(acc[i], ld<T>(src, i));
  else
    for (int64_t i = 0; i < len; ++i) acc[i] += ld<T>(src, i);
}

// out[i] = copy(0)[i] (op) copy(1)[i] (op) ... (op) copy(n-1)[i] for i < len, in f32 with the ranks in order
// (a mean scaled once at the end), rounded once to T.
template <DType T, typename CopyOf>
void reduce_in_rank_order(float* acc, CopyOf&& copy, int n, int64_t len, ReduceOp op, void* out) {
  for (int q = 0; q < n; ++q) accumulate<T>(acc, copy(q), len, op, q == 0);
  const float post = op == ReduceOp::avg ? 1.0f / static_cast<float>(n) : 1.0f;
  for (int64_t i = 0; i < len; ++i) st<T>(out, i, acc[i] * post);
}

// Calls f.template operator()<T>() with the collective's dtype T fixed at compile time.
template <typename F>
void with_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f.template operator()<DType::f32>();
    case DType::bf16:
      return f.template operator()<DType::bf16>();
    case DType::f16:
      return f.template operator()<DType::f16>();
    case DType::f64:
      ZS_FAIL("collectives do not take f64");
  }
}

// The peers in posting order: the next rank first, so the ranks do not all start on the same one.
template <typename F>
void for_each_peer(int rank, int n, F&& f) {
  for (int k = 1; k < n; ++k) f((rank + k) % n);
}

// The reduction step both algorithms below share: receives each peer's copy (`len` elements of T) into the
// receive area, `stride` elements apart in rank order (this rank's own slot left out), sends each peer p the
// `part(p)` (offset, count) of `in` it reduces, waits, and reduces the n copies, this rank's from `own`, in f32
// in rank order into `out`.
template <DType T, typename PartFor>
void exchange_and_reduce(Peers& peers, GlooScratch& sc, gloo::Context& ctx, const TensorView& in, PartFor&& part,
                         const void* own, int64_t len, int64_t stride, ReduceOp op, void* out) {
  const int r = peers.rank(), n = peers.size();
  auto bytes = [](int64_t elems) { return static_cast<std::size_t>(elems) * dtype_size(T); };
  auto slot_of = [&](int q) { return bytes(static_cast<int64_t>(q < r ? q : q - 1) * stride); };
  for_each_peer(r, n,
                [&](int p) { peers.recv(sc.over(ctx, sc.recv_area(), sc.segment, p), slot_of(p), bytes(len), p); });
  for_each_peer(r, n, [&](int p) {
    const chunks::Range to = part(p);
    peers.send(sc.over(ctx, in.data, in.bytes(), p), bytes(to.offset), bytes(to.count), p);
  });
  peers.wait();
  auto copy = [&](int q) -> const void* { return q == r ? own : sc.recv_area() + slot_of(q); };
  reduce_in_rank_order<T>(sc.acc(), copy, n, len, op, out);
}

// Reduce-scatter, every rank to every rank at once: one round, and the ring's bytes ((n-1)/n of the input
// out of each rank). chunks::chunk c of `in` is rank c's share; each peer sends its copy of this rank's chunk
// in `in`'s dtype, and the n copies are reduced in f32 in rank order (the same order for every chunk,
// whichever rank owns it) into `out`. When the peers' copies exceed the receive area they come in segments.
template <DType T>
void direct_reduce_scatter_t(Peers& peers, GlooScratch& sc, gloo::Context& ctx, const TensorView& in, void* out,
                             ReduceOp op) {
  const int r = peers.rank(), n = peers.size();
  const std::size_t es = dtype_size(T);
  const int64_t total = in.numel();
  const auto cap = static_cast<int64_t>(
      std::min(sc.segment / sizeof(float), sc.segment / (es * static_cast<std::size_t>(std::max(n - 1, 1)))));
  for (int64_t seg = 0; seg < chunks::chunk(total, n, 0).count; seg += cap) {  // chunk 0 is the largest
    auto part = [&](int c) {
      const chunks::Range ch = chunks::chunk(total, n, c);
      return chunks::Range{ch.offset + seg, std::clamp<int64_t>(ch.count - seg, 0, cap)};
    };
    const chunks::Range own = part(r);
    exchange_and_reduce<T>(peers, sc, ctx, in, part, static_cast<const char*>(in.data) + own.offset * es, own.count,
                           cap, op, static_cast<char*>(out) + static_cast<std::size_t>(seg) * es);
  }
}

void direct_reduce_scatter(Peers& peers, GlooScratch& sc, gloo::Context& ctx, const TensorView& in, void* out,
                           ReduceOp op) {
  with_dtype(in.dtype, [&]<DType T>() { direct_reduce_scatter_t<T>(peers, sc, ctx, in, out, op); });
}

// All-reduce of a small buffer in one round: every rank sends all of it to every peer and reduces the n
// copies itself, in rank order as the reduce-scatter reduces a chunk, so the result has the same bits as
// the two-round path's in half the latency, for n-1 times the bytes (see kOneRoundAllReduceBytes).
void one_round_all_reduce(Peers& peers, GlooScratch& sc, gloo::Context& ctx, const TensorView& in, void* out,
                          ReduceOp op) {
  const chunks::Range whole{0, in.numel()};
  with_dtype(in.dtype, [&]<DType T>() {
    exchange_and_reduce<T>(
        peers, sc, ctx, in, [&](int) { return whole; }, in.data, whole.count, whole.count, op, out);
  });
}

// All-gather in place, every rank to every rank at once: the output holds `total` elements in n
// chunks::chunks, this rank's already in place; buf(p) is the unbound buffer over it for traffic with rank p.
template <typename BufferFor>
void direct_all_gather(Peers& peers, BufferFor&& buf, std::size_t elem_size, int64_t total) {
  const int r = peers.rank(), n = peers.size();
  auto bytes = [&](int64_t elems) { return static_cast<std::size_t>(elems) * elem_size; };
  const chunks::Range mine = chunks::chunk(total, n, r);
  for_each_peer(r, n, [&](int p) {
    const chunks::Range c = chunks::chunk(total, n, p);
    peers.recv(buf(p), bytes(c.offset), bytes(c.count), p);
  });
  for_each_peer(r, n, [&](int p) { peers.send(buf(p), bytes(mine.offset), bytes(mine.count), p); });
  peers.wait();
}

std::shared_ptr<gloo::transport::Device> make_device(const std::string& host) {
  gloo::transport::tcp::attr attr;
  attr.hostname = host;
  return gloo::transport::tcp::CreateDevice(attr);
}

}  // namespace

GlooComm::GlooComm(std::shared_ptr<Store> store, int rank, int size, CommOptions opts, const std::string& host)
    : GlooComm(std::move(store), make_device(host), rank, size, std::move(opts)) {}

GlooComm::GlooComm(std::shared_ptr<Store> root_store, std::shared_ptr<gloo::transport::Device> dev, int rank, int size,
                   CommOptions opts)
    : Comm(rank, size, std::move(opts)),
      root_store_(std::move(root_store)),
      store_(std::make_unique<PrefixStore>(*root_store_, "gloo/" + name())),
      dev_(std::move(dev)),
      stream_(make_stream(Device::cpu())),
      states_(std::make_unique<WorkPool<GlooWorkState>>()) {
  job_store_ = root_store_;
  connect();
}

GlooComm::~GlooComm() {
  // Drain the stream; a failed collective was already reported through its Work, and a destructor
  // must not throw it again.
  try {
    stream_->synchronize();
  } catch (const std::exception&) {
  }
  std::lock_guard lk(scratch_mu_);
  scratch_.clear();  // the unbound buffers go before the context
}

void GlooComm::connect() {
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank(), size());
  ctx->setTimeout(timeout());
  await_ranks(*store_, "");
  GlooStore adapter(*store_, options().rendezvous_timeout);
  try {
    ctx->connectFullMesh(adapter, dev_);
  } catch (const gloo::Exception& e) {
    ZS_FAIL("rank {}: connecting group '{}' ({} ranks) failed: {}", rank(), name(), size(), e.what());
  } catch (const Error& e) {
    ZS_FAIL("rank {}: rendezvous of group '{}' ({} ranks) failed within {} s: {}; is every rank running?", rank(),
            name(), size(), options().rendezvous_timeout.count() / 1000.0, e.what());
  }
  ctx_ = std::move(ctx);
  // connectFullMesh can return here while a peer is still handshaking; a barrier over the new pairs
  // makes group creation complete on every rank before any of them uses or destroys the group.
  std::vector<char> token(static_cast<std::size_t>(size()), 1);
  std::vector<std::unique_ptr<Unbound>> bufs;  // one per peer
  for (int p = 0; p < size(); ++p) bufs.push_back(ctx_->createUnboundBuffer(token.data(), token.size()));
  std::vector<PendingTransfer> pending;
  Peers peers(*ctx_, kConnectTag, options().rendezvous_timeout, *this, nullptr, pending);
  direct_all_gather(
      peers, [&](int p) -> Unbound& { return *bufs[static_cast<std::size_t>(p)]; }, 1, size());
}

std::unique_ptr<Comm> GlooComm::split(int color, int key) {
  SplitPlan plan = plan_split(*store_, *this, splits_++, color, key);
  if (plan.rank < 0) return nullptr;
  CommOptions o{plan.name, timeout(), options().rendezvous_timeout};
  return std::unique_ptr<Comm>(new GlooComm(root_store_, dev_, plan.rank, plan.size, o));
}

GlooScratch& GlooComm::scratch_for(Stream& s) {
  std::lock_guard lk(scratch_mu_);
  std::unique_ptr<GlooScratch>& sc = scratch_[&s];
  if (!sc) sc = std::make_unique<GlooScratch>(static_cast<std::size_t>(kScratchBytesPerStream / 2));
  return *sc;
}

Work GlooComm::launch(const CollectiveOp& op, Stream& stream) {
  std::shared_ptr<GlooWorkState> state = states_->acquire([] { return std::make_shared<GlooWorkState>(); });
  state->reuse(op);
  GlooScratch* scratch = &scratch_for(stream);
  // The closure holds the state (so the pool cannot reuse it before the stream is done with it).
  stream.submit([this, state, scratch] {
    try {
      run(state->op(), *scratch);
      state->finish(nullptr);
    } catch (const std::exception& e) {
      state->finish(e.what());
      throw;
    }
  });
  stream.record(state->event());
  return Work(std::move(state));
}

void GlooComm::run(const CollectiveOp& op, GlooScratch& scratch) {
  const int n = size(), r = rank();
  scratch.trim(n);
  Peers peers(*ctx_, op.seq, timeout(), *this, &op, scratch.pending);
  const std::size_t es = dtype_size(op.in.dtype);
  auto over = [&](const TensorView& t) {
    return [&scratch, this, &t](int p) -> Unbound& { return scratch.over(*ctx_, t.data, t.bytes(), p); };
  };
  switch (op.kind) {
    case CollectiveKind::all_gather: {
      const int64_t shard = op.in.numel();
      char* mine = static_cast<char*>(op.out.data) + static_cast<std::size_t>(shard * r) * es;
      if (op.in.data != mine) std::memcpy(mine, op.in.data, static_cast<std::size_t>(shard) * es);
      direct_all_gather(peers, over(op.out), es, shard * n);
      break;
    }
    case CollectiveKind::reduce_scatter:
      direct_reduce_scatter(peers, scratch, *ctx_, op.in, op.out.data, op.reduce);
      break;
    case CollectiveKind::all_reduce: {
      if (static_cast<int64_t>(op.in.bytes()) * (n - 1) <= kOneRoundAllReduceBytes) {
        one_round_all_reduce(peers, scratch, *ctx_, op.in, op.out.data, op.reduce);
        break;
      }
      const chunks::Range own = chunks::chunk(op.in.numel(), n, r);
      direct_reduce_scatter(peers, scratch, *ctx_, op.in,
                            static_cast<char*>(op.out.data) + own.offset * static_cast<int64_t>(es), op.reduce);
      direct_all_gather(peers, over(op.out), es, op.in.numel());
      break;
    }
    case CollectiveKind::broadcast: {
      // Root sends to every other rank directly: one hop, (N-1) x bytes from the root.
      const std::size_t bytes = op.in.bytes();
      if (r == op.root)
        for_each_peer(r, n, [&](int p) { peers.send(over(op.in)(p), 0, bytes, p); });
      else
        peers.recv(over(op.in)(op.root), 0, bytes, op.root);
      peers.wait();
      break;
    }
    case CollectiveKind::barrier: {
      // An all-gather of one byte per rank (in the accumulator segment): no rank leaves before every rank has
      // arrived.
      direct_all_gather(
          peers, [&](int p) -> Unbound& { return scratch.over(*ctx_, scratch.acc(), n, p); }, 1, n);
      break;
    }
  }
}

}  // namespace zs
