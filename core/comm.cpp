// Comm front end: argument checks, sequence numbers and descriptions shared by every backend.
#include "core/comm.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>

#include "core/error.h"

namespace zs {

std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

std::string_view backend_name(Backend b) {
  return b == Backend::gloo ? "gloo" : "nccl";
}

std::string_view collective_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::all_gather:
      return "all_gather";
    case CollectiveKind::reduce_scatter:
      return "reduce_scatter";
    case CollectiveKind::all_reduce:
      return "all_reduce";
    case CollectiveKind::broadcast:
      return "broadcast";
    case CollectiveKind::barrier:
      return "barrier";
  }
  return "?";
}

std::string Comm::describe(const CollectiveOp& op) const {
  std::string what =
      fmt::format("{} #{} on group '{}' (rank {} of {}", collective_name(op.kind), op.seq, name(), rank(), size());
  if (op.kind == CollectiveKind::barrier) return what + ")";
  const TensorView& big = op.kind == CollectiveKind::all_gather ? op.out : op.in;
  return what + fmt::format(", {} x {})", big.numel(), dtype_name(big.dtype));
}

void Comm::await_ranks(Store& store, const std::string& prefix) const {
  auto key = [&](int r) { return fmt::format("{}joined/{}", prefix, r); };
  const uint8_t here = 1;
  store.set(key(rank()), std::span(&here, 1));
  std::vector<std::string> keys;
  for (int r = 0; r < size(); ++r) keys.push_back(key(r));
  try {
    store.wait(keys, options().rendezvous_timeout);
  } catch (const Error&) {
    std::vector<int> missing;
    for (int r = 0; r < size(); ++r)
      if (!store.check({key(r)})) missing.push_back(r);
    if (missing.empty()) throw;  // they arrived just as the wait gave up: not a missing rank
    constexpr std::size_t kNamed = 8;
    const std::size_t named = std::min(kNamed, missing.size());
    ZS_FAIL(
        "rank {}: rendezvous of group '{}' ({} ranks) timed out after {} s: rank{} {}{} never joined; start every "
        "rank (on each node, zsrun with the same --nnodes, --master-addr, --master-port and ZS_JOB_TOKEN) or "
        "raise ZS_RENDEZVOUS_TIMEOUT_S",
        rank(), name(), size(), options().rendezvous_timeout.count() / 1000.0, missing.size() > 1 ? "s" : "",
        fmt::join(missing.begin(), missing.begin() + static_cast<std::ptrdiff_t>(named), ", "),
        missing.size() > named ? fmt::format(" ... ({} of {})", missing.size(), size()) : "");
  }
}

float Comm::all_reduce_value(float value, ReduceOp op) {
  if (device().is_cpu()) {
    float out = 0;
    all_reduce(TensorView::flat(&value, DType::f32, 1), TensorView::flat(&out, DType::f32, 1), op).wait();
    return out;
  }
  if (!value_slot_.data()) value_slot_ = Buffer(sizeof(float), MemoryKind::device, device(), MemCategory::other);
  const TensorView slot = value_slot_.view(DType::f32, 1);
  memory_copy(slot.data, device(), &value, Device::cpu(), sizeof(float));
  all_reduce(slot, slot, op).wait();
  memory_copy(&value, Device::cpu(), slot.data, device(), sizeof(float));
  return value;
}

Work Comm::issue(CollectiveOp op, Stream* stream) {
  op.seq = seq_.fetch_add(1);
  Stream& s = stream ? *stream : default_stream();
  auto check_view = [&](const TensorView& v, const char* which) {
    ZS_CHECK(v.dtype == DType::f32 || v.dtype == DType::bf16 || v.dtype == DType::f16,
             "{}: {} has dtype {}; collectives take f32, bf16 or f16", describe(op), which, dtype_name(v.dtype));
    ZS_CHECK(v.device == device(), "{}: {} lives on {} but the {} group runs on {}", describe(op), which,
             v.device.str(), backend_name(backend()), device().str());
    ZS_CHECK(v.data != nullptr || v.numel() == 0, "{}: {} is a null pointer", describe(op), which);
  };
  if (op.kind != CollectiveKind::barrier) {
    check_view(op.in, "the input");
    check_view(op.out, "the output");
    ZS_CHECK(op.in.dtype == op.out.dtype, "{}: input is {} but output is {}", describe(op), dtype_name(op.in.dtype),
             dtype_name(op.out.dtype));
  }
  ZS_CHECK(s.device() == device(), "{}: the stream is on {} but the group runs on {}", describe(op), s.device().str(),
           device().str());
  switch (op.kind) {
    case CollectiveKind::all_gather:
      ZS_CHECK(op.out.numel() == op.in.numel() * size(),
               "{}: the output has {} elements but must hold {} ranks x {} = {}", describe(op), op.out.numel(), size(),
               op.in.numel(), op.in.numel() * size());
      break;
    case CollectiveKind::reduce_scatter:
      ZS_CHECK(op.in.numel() == op.out.numel() * size(),
               "{}: the input has {} elements but must hold {} ranks x {} = {}; pad it to a multiple of the "
               "group size",
               describe(op), op.in.numel(), size(), op.out.numel(), op.out.numel() * size());
      break;
    case CollectiveKind::all_reduce:
      ZS_CHECK(op.in.numel() == op.out.numel(), "{}: input has {} elements, output {}", describe(op), op.in.numel(),
               op.out.numel());
      break;
    case CollectiveKind::broadcast:
      ZS_CHECK(op.root >= 0 && op.root < size(), "{}: root {} is not a rank of this group", describe(op), op.root);
      break;
    case CollectiveKind::barrier:
      break;
  }
  return launch(op, s);
}

Work Comm::all_gather(TensorView in, TensorView out, Stream* s) {
  return issue({CollectiveKind::all_gather, 0, in, out, ReduceOp::sum, 0}, s);
}
Work Comm::reduce_scatter(TensorView in, TensorView out, ReduceOp op, Stream* s) {
  return issue({CollectiveKind::reduce_scatter, 0, in, out, op, 0}, s);
}
Work Comm::all_reduce(TensorView in, TensorView out, ReduceOp op, Stream* s) {
  return issue({CollectiveKind::all_reduce, 0, in, out, op, 0}, s);
}
Work Comm::broadcast(TensorView buf, int root, Stream* s) {
  return issue({CollectiveKind::broadcast, 0, buf, buf, ReduceOp::sum, root}, s);
}
Work Comm::barrier(Stream* s) {
  return issue({CollectiveKind::barrier, 0, {}, {}, ReduceOp::sum, 0}, s);
}

SplitPlan plan_split(Store& store, const Comm& parent, uint64_t split_index, int color, int key) {
  const std::string base = fmt::format("split/{}/", split_index);
  store.set_string(base + std::to_string(parent.rank()), fmt::format("{} {}", color, key));
  struct Member {
    int color, key, rank;
  };
  std::vector<Member> members;
  for (int r = 0; r < parent.size(); ++r) {
    std::string v = store.get_string(base + std::to_string(r), parent.timeout());
    Member m{0, 0, r};
    auto sp = v.find(' ');
    ZS_CHECK(sp != std::string::npos, "split of group '{}': malformed entry '{}' from rank {}", parent.name(), v, r);
    std::from_chars(v.data(), v.data() + sp, m.color);
    std::from_chars(v.data() + sp + 1, v.data() + v.size(), m.key);
    if (m.color == color) members.push_back(m);
  }
  if (color < 0) return {};
  std::stable_sort(members.begin(), members.end(),
                   [](const Member& a, const Member& b) { return a.key != b.key ? a.key < b.key : a.rank < b.rank; });
  SplitPlan plan;
  plan.size = static_cast<int>(members.size());
  for (int i = 0; i < plan.size; ++i)
    if (members[static_cast<std::size_t>(i)].rank == parent.rank()) plan.rank = i;
  plan.name = fmt::format("{}/split{}.c{}", parent.name(), split_index, color);
  return plan;
}

}  // namespace zs
