// Gloo collectives: ring reduce-scatter and all-gather on unbound buffers (true reduce-scatter volume),
// all-reduce as the two, bf16/f16 reduced in f32, every wait bounded by the group's timeout.
#include "core/comm_gloo.h"

#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/ring.h"
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

// A stream's collective staging: a send and a receive segment (reductions go through them in f32) with
// their unbound buffers, and the unbound buffers of the tensors it has moved in place (the engine's gather
// and gradient buffers come back every step), so a steady step creates none.
struct GlooScratch {
  GlooScratch(gloo::Context& ctx, std::size_t segment_bytes)
      : mem(2 * segment_bytes, MemoryKind::host, Device::cpu(), MemCategory::comm_scratch),
        send(ctx.createUnboundBuffer(mem.data(), segment_bytes)),
        recv(ctx.createUnboundBuffer(static_cast<char*>(mem.data()) + segment_bytes, segment_bytes)) {}
  // The unbound buffer over [ptr, ptr + bytes), made on first use. One that no longer exists costs only its
  // entry (an unbound buffer touches its memory only while an operation on it is pending).
  Unbound& over(gloo::Context& ctx, void* ptr, std::size_t bytes) {
    auto it = seen.find({ptr, bytes});
    if (it != seen.end()) return *it->second;
    if (seen.size() >= kMaxSeen) seen.clear();  // a program that moves ever new tensors: start again
    return *seen.emplace(std::pair{ptr, bytes}, ctx.createUnboundBuffer(ptr, bytes)).first->second;
  }
  static constexpr std::size_t kMaxSeen = 4096;
  Buffer mem;
  std::unique_ptr<Unbound> send, recv;
  std::map<std::pair<const void*, std::size_t>, std::unique_ptr<Unbound>> seen;
};

namespace {

constexpr uint8_t kRingSlotPrefix = 0x40;
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

// One collective's point-to-point traffic, with errors that name the op (or, with none, the group's
// connection) and the peer; the description is formatted only for an error.
class Ring {
 public:
  Ring(gloo::Context& ctx, uint64_t seq, Millis timeout, const Comm& comm, const CollectiveOp* op)
      : ctx_(ctx),
        slot_(gloo::Slot::build(kRingSlotPrefix, static_cast<uint32_t>(seq))),
        timeout_(timeout),
        comm_(comm),
        op_(op) {}

  int left() const { return (ctx_.rank - 1 + ctx_.size) % ctx_.size; }
  int right() const { return (ctx_.rank + 1) % ctx_.size; }

  // Sends bytes [send_at, send_at + send_bytes) of `send` to `dst` and receives recv_bytes from `src` into
  // `recv` at recv_at, concurrently; either may be empty, and one buffer may do both.
  void exchange(Unbound* send, std::size_t send_at, std::size_t send_bytes, int dst, Unbound* recv, std::size_t recv_at,
                std::size_t recv_bytes, int src) {
    try {
      if (recv_bytes) recv->recv(src, slot_, recv_at, recv_bytes);
      if (send_bytes) send->send(dst, slot_, send_at, send_bytes);
      if (recv_bytes) finish(*recv, true, src);
      if (send_bytes) finish(*send, false, dst);
    } catch (const gloo::Exception& e) {
      ZS_FAIL("{} failed: the connection to rank {} or {} broke ({}); that rank has probably died — see its log",
              what(), src, dst, e.what());
    }
  }

 private:
  void finish(gloo::transport::UnboundBuffer& b, bool is_recv, int peer) {
    auto t0 = std::chrono::steady_clock::now();
    try {
      if (is_recv)
        b.waitRecv(timeout_);
      else
        b.waitSend(timeout_);
    } catch (const gloo::Exception& e) {
      const bool timed_out = std::chrono::steady_clock::now() - t0 >= timeout_;
      if (timed_out)
        ZS_FAIL(
            "{} timed out after {} s waiting to {} rank {}; that rank is stuck, slow or gone (comm.timeout_s "
            "sets the limit)",
            what(), timeout_.count() / 1000.0, is_recv ? "receive from" : "send to", peer);
      ZS_FAIL("{} failed while {} rank {}: {}; that rank has probably died — see its log", what(),
              is_recv ? "receiving from" : "sending to", peer, e.what());
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

template <DType T>
void load_segment(float* dst, const void* src, int64_t base, int64_t len) {
  for (int64_t i = 0; i < len; ++i) dst[i] = ld<T>(src, base + i);
}

// dst[i] = recv[i] (op) src[base + i], in f32; when `out` is set the result is scaled and stored there instead.
template <DType T>
void combine_segment(ReduceOp op, float* dst, const float* recv, const void* src, int64_t base, int64_t len,
                     void* out = nullptr, int64_t out_base = 0, float post = 1.0f) {
  for (int64_t i = 0; i < len; ++i) {
    const float a = recv[i], b = ld<T>(src, base + i);
    const float v = op == ReduceOp::max ? std::max(a, b) : a + b;
    if (out)
      st<T>(out, out_base + i, v * post);
    else
      dst[i] = v;
  }
}

// Ring reduce-scatter of `in` (ring::chunk c of it is rank c's share) into `out` (this rank's chunk), in f32.
template <DType T>
void ring_reduce_scatter_t(Ring& ring, int rank, int n, const TensorView& in, void* out, ReduceOp op,
                           GlooScratch& scratch) {
  auto* send = static_cast<float*>(scratch.send->ptr);
  const auto* recv = static_cast<const float*>(scratch.recv->ptr);
  const float post = op == ReduceOp::avg ? 1.0f / static_cast<float>(n) : 1.0f;
  const int64_t total = in.numel();
  if (n == 1) {
    for (int64_t i = 0; i < total; ++i) st<T>(out, i, ld<T>(in.data, i) * post);
    return;
  }
  const int64_t max_chunk = ring::chunk(total, n, 0).count;  // the first chunks are the larger ones
  // Segments outermost: each segment makes the whole trip round the ring, so scratch holds one segment.
  for (int64_t seg = 0; seg < max_chunk; seg += GlooComm::kSegment) {
    auto seg_len = [&](int c) {
      return std::clamp<int64_t>(ring::chunk(total, n, c).count - seg, 0, GlooComm::kSegment);
    };
    auto elem = [&](int c) { return ring::chunk(total, n, c).offset + seg; };
    const int c0 = ring::rs_send_chunk(rank, 0, n);
    load_segment<T>(send, in.data, elem(c0), seg_len(c0));
    for (int s = 0; s < n - 1; ++s) {
      const int cs = ring::rs_send_chunk(rank, s, n), cr = ring::rs_recv_chunk(rank, s, n);
      ring.exchange(scratch.send.get(), 0, static_cast<std::size_t>(seg_len(cs)) * 4, ring.right(), scratch.recv.get(),
                    0, static_cast<std::size_t>(seg_len(cr)) * 4, ring.left());
      if (s < n - 2)
        combine_segment<T>(op, send, recv, in.data, elem(cr), seg_len(cr));
      else
        combine_segment<T>(op, nullptr, recv, in.data, elem(cr), seg_len(cr), out, seg, post);
    }
  }
}

void ring_reduce_scatter(Ring& ring, int rank, int n, const TensorView& in, void* out, ReduceOp op,
                         GlooScratch& scratch) {
  switch (in.dtype) {
    case DType::f32:
      return ring_reduce_scatter_t<DType::f32>(ring, rank, n, in, out, op, scratch);
    case DType::bf16:
      return ring_reduce_scatter_t<DType::bf16>(ring, rank, n, in, out, op, scratch);
    case DType::f16:
      return ring_reduce_scatter_t<DType::f16>(ring, rank, n, in, out, op, scratch);
    case DType::f64:
      ZS_FAIL("collectives do not take f64");
  }
}

// Ring all-gather in place: `buf` holds `total` elements in n ring::chunks; this rank's is already in place.
void ring_all_gather(Ring& ring, int rank, int n, Unbound& buf, std::size_t elem_size, int64_t total) {
  auto bytes = [&](int64_t elems) { return static_cast<std::size_t>(elems) * elem_size; };
  for (int s = 0; s < n - 1; ++s) {
    const ring::Range cs = ring::chunk(total, n, ring::ag_send_chunk(rank, s, n));
    const ring::Range cr = ring::chunk(total, n, ring::ag_recv_chunk(rank, s, n));
    ring.exchange(&buf, bytes(cs.offset), bytes(cs.count), ring.right(), &buf, bytes(cr.offset), bytes(cr.count),
                  ring.left());
  }
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
  Ring ring(*ctx_, kConnectTag, options().rendezvous_timeout, *this, nullptr);
  ring_all_gather(ring, rank(), size(), *ctx_->createUnboundBuffer(token.data(), token.size()), 1, size());
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
  if (!sc) sc = std::make_unique<GlooScratch>(*ctx_, static_cast<std::size_t>(kScratchBytesPerStream / 2));
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
  Ring ring(*ctx_, op.seq, timeout(), *this, &op);
  const std::size_t es = dtype_size(op.in.dtype);
  auto over = [&](const TensorView& t) -> Unbound& { return scratch.over(*ctx_, t.data, t.bytes()); };
  switch (op.kind) {
    case CollectiveKind::all_gather: {
      const int64_t shard = op.in.numel();
      char* mine = static_cast<char*>(op.out.data) + static_cast<std::size_t>(shard * r) * es;
      if (op.in.data != mine) std::memcpy(mine, op.in.data, static_cast<std::size_t>(shard) * es);
      ring_all_gather(ring, r, n, over(op.out), es, shard * n);
      break;
    }
    case CollectiveKind::reduce_scatter:
      ring_reduce_scatter(ring, r, n, op.in, op.out.data, op.reduce, scratch);
      break;
    case CollectiveKind::all_reduce: {
      const ring::Range own = ring::chunk(op.in.numel(), n, r);
      ring_reduce_scatter(ring, r, n, op.in, static_cast<char*>(op.out.data) + own.offset * static_cast<int64_t>(es),
                          op.reduce, scratch);
      ring_all_gather(ring, r, n, over(op.out), es, op.in.numel());
      break;
    }
    case CollectiveKind::broadcast: {
      // Root sends to every other rank directly: one hop, (N-1) x bytes from the root.
      const std::size_t bytes = op.in.bytes();
      Unbound& buf = over(op.in);
      if (r == op.root) {
        for (int p = 0; p < n; ++p)
          if (p != r) ring.exchange(&buf, 0, bytes, p, nullptr, 0, 0, p);
      } else {
        ring.exchange(nullptr, 0, 0, op.root, &buf, 0, bytes, op.root);
      }
      break;
    }
    case CollectiveKind::barrier: {
      // An all-gather of one byte per rank (in the send segment): no rank leaves before every rank has arrived.
      ring_all_gather(ring, r, n, *scratch.send, 1, n);
      break;
    }
  }
}

}  // namespace zs
