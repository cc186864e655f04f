// Every collective x dtype against a result computed locally: in-place and out-of-place, odd counts,
// many ops in flight on two streams, sub-groups.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "tests/dist/dist_main.h"

namespace zs {
namespace {

using test::pg;

// Small integers are exact in every dtype, and so are their sums over a few ranks.
float value(int rank, int64_t i) {
  return static_cast<float>((i * 7 + rank * 3) % 17 - 8);
}

std::vector<uint8_t> make(DType t, int64_t n) {
  return std::vector<uint8_t>(static_cast<std::size_t>(n) * dtype_size(t));
}
void fill(std::vector<uint8_t>& b, DType t, int rank, int64_t offset, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    store_from_f32(b.data(), t, static_cast<std::size_t>(offset + i), value(rank, offset + i));
}
float at(const std::vector<uint8_t>& b, DType t, int64_t i) {
  return load_as_f32(b.data(), t, static_cast<std::size_t>(i));
}

double reduce_ref(ReduceOp op, int world, int64_t i) {
  double acc = op == ReduceOp::max ? -1e30 : 0.0;
  for (int r = 0; r < world; ++r) acc = op == ReduceOp::max ? std::max<double>(acc, value(r, i)) : acc + value(r, i);
  return op == ReduceOp::avg ? acc / world : acc;
}

double tolerance(DType t, double x) {
  const double rel = t == DType::f32 ? 1e-6 : t == DType::bf16 ? 1.0 / 128 : 1.0 / 1024;
  return rel * std::fabs(x) + 1e-6;
}

TensorView view(std::vector<uint8_t>& b, DType t, int64_t n, int64_t off = 0) {
  return TensorView::flat(b.data() + off * static_cast<int64_t>(dtype_size(t)), t, n);
}

struct Case {
  DType dtype;
  int64_t count;  // per-rank shard for all_gather / reduce_scatter, total for all_reduce / broadcast
  bool in_place;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{4097}, int64_t{(1 << 20) + 3}})
      for (bool ip : {false, true}) out.push_back({t, n, ip});
  return out;
}

std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  return fmt::format("{}_{}_{}", dtype_name(i.param.dtype), i.param.count, i.param.in_place ? "inplace" : "outofplace");
}

class Collective : public ::testing::TestWithParam<Case> {};

TEST_P(Collective, AllGather) {
  const auto [t, n, ip] = GetParam();
  Comm& c = *pg().world;
  const int w = c.size(), r = c.rank();
  auto out = make(t, n * w);
  std::vector<uint8_t> in;
  TensorView in_view;
  if (ip) {
    fill(out, t, r, n * r, n);
    in_view = view(out, t, n, n * r);
  } else {
    in = make(t, n);
    for (int64_t i = 0; i < n; ++i) store_from_f32(in.data(), t, static_cast<std::size_t>(i), value(r, n * r + i));
    in_view = view(in, t, n);
  }
  c.all_gather(in_view, view(out, t, n * w)).wait();
  int64_t wrong = 0;
  for (int64_t i = 0; i < n * w; ++i) wrong += at(out, t, i) != value(static_cast<int>(i / n), i);
  EXPECT_EQ(wrong, 0);
}

TEST_P(Collective, ReduceScatterSumAvgMax) {
  const auto [t, n, ip] = GetParam();
  Comm& c = *pg().world;
  const int w = c.size(), r = c.rank();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    auto in = make(t, n * w);
    fill(in, t, r, 0, n * w);
    auto out_buf = make(t, n);
    TensorView out = ip ? view(in, t, n, n * r) : view(out_buf, t, n);
    c.reduce_scatter(view(in, t, n * w), out, op).wait();
    const auto& res = ip ? in : out_buf;
    const int64_t base = ip ? n * r : 0;
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = reduce_ref(op, w, n * r + i);
      wrong += std::fabs(at(res, t, base + i) - want) > tolerance(t, want);
    }
    EXPECT_EQ(wrong, 0) << reduce_op_name(op);
  }
}

TEST_P(Collective, AllReduceSumAvgMax) {
  const auto [t, n, ip] = GetParam();
  Comm& c = *pg().world;
  const int r = c.rank();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
    auto in = make(t, n);
    fill(in, t, r, 0, n);
    auto out_buf = make(t, n);
    auto& res = ip ? in : out_buf;
    c.all_reduce(view(in, t, n), view(res, t, n), op).wait();
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = reduce_ref(op, c.size(), i);
      wrong += std::fabs(at(res, t, i) - want) > tolerance(t, want);
    }
    EXPECT_EQ(wrong, 0) << reduce_op_name(op);
    if (!ip) {  // out-of-place leaves the input alone
      int64_t touched = 0;
      for (int64_t i = 0; i < n; ++i) touched += at(in, t, i) != value(r, i);
      EXPECT_EQ(touched, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Collective, ::testing::ValuesIn(cases()), case_name);

TEST(Collectives, AllReduceValueOfAHostScalar) {
  Comm& c = *pg().world;
  const int r = c.rank(), w = c.size();
  EXPECT_EQ(c.all_reduce_value(static_cast<float>(r + 1), ReduceOp::sum), static_cast<float>(w * (w + 1) / 2));
  EXPECT_EQ(c.all_reduce_value(static_cast<float>(r + 1), ReduceOp::max), static_cast<float>(w));
  EXPECT_FLOAT_EQ(c.all_reduce_value(static_cast<float>(2 * r), ReduceOp::avg), static_cast<float>(w - 1));
}

TEST(Collectives, BroadcastFromEveryRoot) {
  Comm& c = *pg().world;
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (int64_t n : {int64_t{1}, int64_t{4097}, int64_t{(1 << 20) + 3}})
      for (int root = 0; root < c.size(); ++root) {
        auto buf = make(t, n);
        fill(buf, t, c.rank(), 0, n);
        c.broadcast(view(buf, t, n), root).wait();
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) wrong += at(buf, t, i) != value(root, i);
        EXPECT_EQ(wrong, 0) << dtype_name(t) << " n=" << n << " root " << root;
      }
}

TEST(Collectives, RandomFloatsSumMatchesF64Reference) {
  Comm& c = *pg().world;
  const int64_t n = 100003;
  std::vector<float> mine(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(n));
  std::vector<double> want(static_cast<std::size_t>(n), 0.0);
  for (int r = 0; r < c.size(); ++r) {
    std::mt19937 rng(static_cast<unsigned>(1000 + r));
    std::normal_distribution<float> d;
    for (int64_t i = 0; i < n; ++i) {
      float v = d(rng);
      want[static_cast<std::size_t>(i)] += v;
      if (r == c.rank()) mine[static_cast<std::size_t>(i)] = v;
    }
  }
  c.all_reduce(TensorView::flat(mine.data(), DType::f32, n), TensorView::flat(out.data(), DType::f32, n), ReduceOp::sum)
      .wait();
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i)
    wrong += std::fabs(out[static_cast<std::size_t>(i)] - want[static_cast<std::size_t>(i)]) > 1e-5 * c.size();
  EXPECT_EQ(wrong, 0);
}

// The Gloo backend reduces an element's contributions in f32 in rank order, whichever rank owns its chunk,
// and rounds once to the dtype: a sum (or mean) is bitwise the sequential f32 sum of the ranks' values, for
// a small all-reduce (one round) as for a large one (a reduce-scatter and an all-gather).
TEST(Collectives, GlooSumsInRankOrderAndRoundsOnce) {
  Comm& c = *pg().world;
  if (c.backend() != Backend::gloo) GTEST_SKIP() << "rank order is the Gloo backend's guarantee";
  const int w = c.size(), r = c.rank();
  const int64_t small = 1001, large = 20011 * w + (w > 1 ? 1 : 0);  // chunks that differ by one element
  for (int64_t n : {small, large})
    for (DType t : {DType::f32, DType::bf16, DType::f16})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
        std::vector<std::vector<uint8_t>> bufs;  // every rank's input, made alike on every rank
        for (int q = 0; q < w; ++q) {
          std::mt19937 rng(static_cast<unsigned>(77 + q));
          std::normal_distribution<float> d(0.0f, 3.0f);
          bufs.push_back(make(t, n));
          for (int64_t i = 0; i < n; ++i) store_from_f32(bufs.back().data(), t, static_cast<std::size_t>(i), d(rng));
        }
        auto want = make(t, n);
        for (int64_t i = 0; i < n; ++i) {
          float acc = at(bufs[0], t, i);
          for (int q = 1; q < w; ++q) acc += at(bufs[static_cast<std::size_t>(q)], t, i);
          if (op == ReduceOp::avg) acc *= 1.0f / static_cast<float>(w);
          store_from_f32(want.data(), t, static_cast<std::size_t>(i), acc);
        }
        const std::size_t es = dtype_size(t);
        auto out = make(t, n);
        c.all_reduce(view(bufs[static_cast<std::size_t>(r)], t, n), view(out, t, n), op).wait();
        EXPECT_TRUE(out == want) << "all_reduce " << dtype_name(t) << " " << reduce_op_name(op) << " n=" << n;
        const int64_t shard = n / w;  // reduce-scatter over the first shard * w elements
        auto mine = make(t, shard);
        c.reduce_scatter(view(bufs[static_cast<std::size_t>(r)], t, shard * w), view(mine, t, shard), op).wait();
        EXPECT_TRUE(std::equal(mine.begin(), mine.end(), want.begin() + static_cast<int64_t>(es) * shard * r))
            << "reduce_scatter " << dtype_name(t) << " " << reduce_op_name(op) << " n=" << n;
      }
}

TEST(Collectives, ManyOpsInFlightOnTwoStreams) {
  Comm& c = *pg().world;
  auto s1 = make_stream(Device::cpu()), s2 = make_stream(Device::cpu());
  constexpr int kOps = 24;
  const int64_t n = 3001;
  std::vector<std::vector<float>> bufs(kOps, std::vector<float>(static_cast<std::size_t>(n)));
  std::vector<Work> works;
  for (int k = 0; k < kOps; ++k) {
    for (int64_t i = 0; i < n; ++i)
      bufs[static_cast<std::size_t>(k)][static_cast<std::size_t>(i)] = value(c.rank(), i + k);
    auto v = TensorView::flat(bufs[static_cast<std::size_t>(k)].data(), DType::f32, n);
    works.push_back(c.all_reduce(v, v, ReduceOp::sum, k % 2 ? s1.get() : s2.get()));
  }
  for (auto& w : works) w.wait();
  int64_t wrong = 0;
  for (int k = 0; k < kOps; ++k)
    for (int64_t i = 0; i < n; ++i) {
      double want = 0;
      for (int r = 0; r < c.size(); ++r) want += value(r, i + k);
      wrong += bufs[static_cast<std::size_t>(k)][static_cast<std::size_t>(i)] != want;
    }
  EXPECT_EQ(wrong, 0);
}

TEST(Collectives, WorkEventOrdersAnotherStream) {
  Comm& c = *pg().world;
  auto consumer = make_stream(Device::cpu());
  std::vector<float> buf(1000, 1.0f);
  auto v = TensorView::flat(buf.data(), DType::f32, 1000);
  Work w = c.all_reduce(v, v, ReduceOp::sum);
  float seen = 0;
  consumer->wait(*w.event());
  consumer->submit([&] { seen = buf[999]; });
  consumer->synchronize();
  EXPECT_EQ(seen, static_cast<float>(c.size()));
  EXPECT_TRUE(w.is_done());
}

TEST(Collectives, BarrierWaitsForEveryRank) {
  Comm& c = *pg().world;
  Store& s = *pg().group_store;
  static int round = 0;
  ++round;
  std::this_thread::sleep_for(std::chrono::milliseconds(30 * c.rank()));
  s.set_string(fmt::format("barrier_test/{}/{}", round, c.rank()), "1");
  c.barrier().wait();
  std::vector<std::string> keys;
  for (int r = 0; r < c.size(); ++r) keys.push_back(fmt::format("barrier_test/{}/{}", round, r));
  EXPECT_TRUE(s.check(keys)) << "a rank left the barrier before every rank had arrived";
}

TEST(Collectives, SplitFormsOrderedSubgroups) {
  Comm& c = *pg().world;
  const int color = c.rank() % 2;
  auto sub = c.split(color, -c.rank());  // reversed order inside each group
  ASSERT_NE(sub, nullptr);
  int expected_size = 0, expected_rank = 0;
  for (int r = 0; r < c.size(); ++r)
    if (r % 2 == color) {
      ++expected_size;
      if (r > c.rank()) ++expected_rank;
    }
  EXPECT_EQ(sub->size(), expected_size);
  EXPECT_EQ(sub->rank(), expected_rank);
  float mine = static_cast<float>(c.rank()), sum = 0;
  sub->all_reduce(TensorView::flat(&mine, DType::f32, 1), TensorView::flat(&sum, DType::f32, 1), ReduceOp::sum).wait();
  float want = 0;
  for (int r = color; r < c.size(); r += 2) want += static_cast<float>(r);
  EXPECT_EQ(sum, want);
  auto none = c.split(c.rank() == 0 ? -1 : 0, 0);
  EXPECT_EQ(none == nullptr, c.rank() == 0);
  c.barrier().wait();  // groups are torn down together
}

TEST(Collectives, BadArgumentsAreClearErrors) {
  Comm& c = *pg().world;
  std::vector<float> a(10), b(10);
  if (c.size() > 1) {
    try {
      c.reduce_scatter(TensorView::flat(a.data(), DType::f32, 10 * c.size() + 1),
                       TensorView::flat(b.data(), DType::f32, 10), ReduceOp::sum);
      ADD_FAILURE() << "size mismatch accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("reduce_scatter"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("pad it"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(c.all_reduce(TensorView::flat(a.data(), DType::f32, 10), TensorView::flat(b.data(), DType::bf16, 10),
                            ReduceOp::sum),
               Error);
  EXPECT_THROW(
      c.all_reduce(TensorView::flat(a.data(), DType::f64, 5), TensorView::flat(b.data(), DType::f64, 5), ReduceOp::sum),
      Error);
  // Failed checks consume a sequence number on every rank alike, so the group stays in step.
  c.barrier().wait();
}

}  // namespace
}  // namespace zs
