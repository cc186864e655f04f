// CPU kernels against an f64 scalar reference: every optimizer x gradient dtype x state dtype x fused
// output, tail sizes, bias correction at steps 1 and 10000, weight-decay ranges that start and end
// mid-vector; every instruction set bit-identical; reductions deterministic across thread counts; casts,
// scaling and accumulation (add).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "core/error.h"
#include "kernels/decay_segments.h"
#include "kernels/kernels.h"

namespace zs::kernels {
namespace {

const Device kCpu = Device::cpu();

std::vector<const char*> isas() {
  std::vector<const char*> out;
  for (const char* isa : {"scalar", "avx2", "avx512"}) {
    try {
      set_cpu_isa(isa);
      out.push_back(isa);
    } catch (const Error&) {
    }
  }
  return out;
}

// Restores the ISA and thread count a test changed.
struct KernelSettings {
  std::string isa = cpu_isa();
  int threads = cpu_threads();
  ~KernelSettings() {
    set_cpu_isa(isa.c_str());
    set_cpu_threads(threads);
  }
};

struct Buf {
  DType t;
  std::vector<uint8_t> bytes;
  Buf(DType dt, int64_t n) : t(dt), bytes(static_cast<std::size_t>(n) * dtype_size(dt)) {}
  void* data() { return bytes.data(); }
  float get(int64_t i) const { return load_as_f32(bytes.data(), t, static_cast<std::size_t>(i)); }
  void set(int64_t i, float v) { store_from_f32(bytes.data(), t, static_cast<std::size_t>(i), v); }
};

// The element-wise rule in f64, from the same stored inputs (PyTorch's definitions).
struct Ref {
  double p, m, v;
};
Ref reference(const OptimizerHyper& h, double p, double g, double m, double v, double grad_scale, bool decay) {
  const double wd = decay ? h.weight_decay : 0.0;
  g *= grad_scale;
  switch (h.kind) {
    case Optimizer::adamw:
    case Optimizer::adam: {
      if (h.kind == Optimizer::adam)
        g += wd * p;
      else
        p *= 1.0 - static_cast<double>(h.lr) * wd;
      m = h.beta1 * m + (1.0 - h.beta1) * g;
      v = h.beta2 * v + (1.0 - h.beta2) * g * g;
      const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
      const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
      p -= h.lr / bc1 * m / (std::sqrt(v) / std::sqrt(bc2) + h.eps);
      return {p, m, v};
    }
    case Optimizer::sgd: {
      g += wd * p;
      if (h.beta1 != 0.0f) {
        m = h.step <= 1 ? g : h.beta1 * m + (1.0 - h.dampening) * g;
        g = h.nesterov ? g + h.beta1 * m : m;
      }
      return {p - h.lr * g, m, v};
    }
    case Optimizer::lion: {
      const double c = h.beta1 * m + (1.0 - h.beta1) * g;
      p = p * (1.0 - static_cast<double>(h.lr) * wd) - h.lr * ((c > 0) - (c < 0));
      return {p, h.beta2 * m + (1.0 - h.beta2) * g, v};
    }
  }
  return {p, m, v};
}

bool in_ranges(const std::vector<ElementRange>& r, int64_t i) {
  for (auto& x : r)
    if (i >= x.begin && i < x.end) return true;
  return false;
}

struct Case {
  OptimizerHyper h;
  DType grad, state;
  bool out;
  DType out_dtype;
};

std::string name(const Case& c) {
  const char* k[] = {"adamw", "adam", "sgd", "lion"};
  return fmt::format("{} step {} grad {} state {} out {}{}", k[static_cast<int>(c.h.kind)], c.h.step,
                     dtype_name(c.grad), dtype_name(c.state), c.out ? dtype_name(c.out_dtype) : "none",
                     c.h.nesterov ? " nesterov" : "");
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Optimizer k : {Optimizer::adamw, Optimizer::adam, Optimizer::sgd, Optimizer::lion})
    for (int64_t step : {int64_t{1}, int64_t{10000}})
      for (DType g : {DType::f32, DType::bf16, DType::f16})
        for (DType s : {DType::f32, DType::bf16}) {
          if (k == Optimizer::sgd && s == DType::bf16) continue;
          for (int out = 0; out < 3; ++out) {
            OptimizerHyper h;
            h.kind = k;
            h.step = step;
            h.lr = k == Optimizer::lion ? 1e-4f : 1e-3f;
            h.beta1 = k == Optimizer::sgd ? 0.9f : 0.9f;
            h.beta2 = k == Optimizer::lion ? 0.99f : 0.999f;
            h.weight_decay = 0.1f;
            h.dampening = k == Optimizer::sgd ? 0.1f : 0.0f;
            h.nesterov = k == Optimizer::sgd && out == 1;
            cases.push_back({h, g, s, out > 0, out == 2 ? DType::f16 : DType::bf16});
          }
        }
  return cases;
}

// Runs one update of n elements; checks every output element against the f64 reference.
// Returns the outputs (param, state1, state2, param_out bytes) for cross-ISA comparison.
std::vector<uint8_t> run_case(const Case& c, int64_t n, uint32_t seed, bool check) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  std::vector<float> p(static_cast<std::size_t>(n));
  Buf g(c.grad, n), s1(c.state, n), s2(c.state, n), out(c.out_dtype, n);
  for (int64_t i = 0; i < n; ++i) {
    p[static_cast<std::size_t>(i)] = nd(rng);
    g.set(i, nd(rng) * 0.5f);
    s1.set(i, nd(rng) * 0.1f);
    s2.set(i, ud(rng) * 0.01f);
  }
  // Some denormal states (and, but for Lion, whose sign of a denormal sum could flip, gradients): the
  // conversions to bf16 must round them, not flush them.
  for (int64_t i = 5; i < n; i += 97) {
    if (c.h.kind != Optimizer::lion) g.set(i, nd(rng) * 1e-39f);
    s1.set(i, nd(rng) * 1e-39f);
    s2.set(i, ud(rng) * 1e-38f);
  }
  const std::vector<float> p0 = p;
  const Buf g0 = g, m0 = s1, v0 = s2;
  // Weight decay on two ranges that start and end mid-vector.
  std::vector<ElementRange> ranges = {{n / 5, n / 2}, {(2 * n) / 3, n - n / 7}};
  const bool adam = c.h.kind == Optimizer::adamw || c.h.kind == Optimizer::adam;
  UpdateArgs a;
  a.n = n;
  a.param = p.data();
  a.grad = g.data();
  a.grad_dtype = c.grad;
  a.grad_scale = 0.75f;
  a.state1 = s1.data();
  a.state2 = adam ? s2.data() : nullptr;
  a.state_dtype = c.state;
  a.param_out = c.out ? out.data() : nullptr;
  a.param_out_dtype = c.out_dtype;
  a.decay_ranges = ranges.data();
  a.num_decay_ranges = static_cast<int64_t>(ranges.size());
  optimizer_update(kCpu, c.h, a);
  if (check) {
    int64_t bad = 0;
    auto close = [](double got, double want, double rel) {
      return std::fabs(got - want) <= rel * std::fabs(want) + 1e-7;
    };
    const double state_rel = c.state == DType::f32 ? 3e-6 : 1.0 / 128;
    for (int64_t i = 0; i < n && bad < 5; ++i) {
      const Ref r = reference(c.h, p0[static_cast<std::size_t>(i)], g0.get(i), m0.get(i), v0.get(i), a.grad_scale,
                              in_ranges(ranges, i));
      const double pr = p[static_cast<std::size_t>(i)];
      // The parameter moves by ~lr per step: compare against the size of the step, not of the parameter.
      const double step_size = std::fabs(r.p - p0[static_cast<std::size_t>(i)]) + 1e-6 * std::fabs(r.p);
      bool ok = std::fabs(pr - r.p) <= 2e-5 * step_size + 4e-7 * std::fabs(r.p);
      if (c.state == DType::bf16) ok = std::fabs(pr - r.p) <= 1e-2 * step_size + 4e-7 * std::fabs(r.p);
      ok = ok && close(s1.get(i), r.m, state_rel);
      if (adam) ok = ok && close(s2.get(i), r.v, state_rel);
      if (c.out) {
        Buf expect(c.out_dtype, 1);
        expect.set(0, p[static_cast<std::size_t>(i)]);
        ok = ok && std::memcmp(expect.data(), out.bytes.data() + i * 2, 2) == 0;  // exactly RNE(param)
      }
      if (!ok) {
        ++bad;
        ADD_FAILURE() << name(c) << " n=" << n << " i=" << i << ": p " << pr << " want " << r.p << ", m " << s1.get(i)
                      << " want " << r.m << ", v " << s2.get(i) << " want " << r.v;
      }
    }
  }
  std::vector<uint8_t> all(reinterpret_cast<uint8_t*>(p.data()), reinterpret_cast<uint8_t*>(p.data() + n));
  for (const Buf* b : {&s1, &s2, &out}) all.insert(all.end(), b->bytes.begin(), b->bytes.end());
  return all;
}

TEST(OptimizerUpdate, MatchesF64ReferenceForEveryCombination) {
  KernelSettings keep;
  for (const Case& c : all_cases())
    for (int64_t n : {1, 7, 15, 17, 4096}) run_case(c, n, static_cast<uint32_t>(n), true);
}

TEST(OptimizerUpdate, LargeTailSizeMultithreaded) {
  KernelSettings keep;
  set_cpu_threads(2);
  for (const Case& c : all_cases())
    if (c.h.step == 10000 && c.out && c.out_dtype == DType::bf16) run_case(c, 1000003, 3, true);
}

TEST(OptimizerUpdate, EveryIsaAndThreadCountIsBitIdentical) {
  KernelSettings keep;
  const auto supported = isas();
  ASSERT_FALSE(supported.empty());
  for (const Case& c : all_cases()) {
    if (c.h.step != 1) continue;
    set_cpu_isa("scalar");
    set_cpu_threads(1);
    const auto want = run_case(c, 100003, 11, false);
    for (const char* isa : supported)
      for (int threads : {1, 2}) {
        set_cpu_isa(isa);
        set_cpu_threads(threads);
        ASSERT_EQ(run_case(c, 100003, 11, false), want) << name(c) << " isa " << isa << " threads " << threads;
      }
  }
}

// A library's default thread count (the offloaded step's on a GPU machine) yields to ZS_CPU_THREADS.
TEST(CpuThreads, ADefaultYieldsToTheUsersChoice) {
  KernelSettings keep;
  const int before = cpu_threads();
  set_default_cpu_threads(before + 2);
  EXPECT_EQ(cpu_threads(), std::getenv("ZS_CPU_THREADS") ? before : before + 2);
}

TEST(OptimizerUpdate, NoDecayRangesMeansDecayEverywhereAndErrorsAreClear) {
  std::vector<float> p(10, 1.0f), g(10, 0.0f), m(10, 0.0f), v(10, 0.0f);
  OptimizerHyper h;
  h.weight_decay = 0.5f;
  h.lr = 0.1f;
  UpdateArgs a;
  a.n = 10;
  a.param = p.data();
  a.grad = g.data();
  a.state1 = m.data();
  a.state2 = v.data();
  optimizer_update(kCpu, h, a);
  for (float x : p) EXPECT_FLOAT_EQ(x, 0.95f);  // zero gradient: only the decoupled decay moved it
  a.state2 = nullptr;
  EXPECT_THROW(optimizer_update(kCpu, h, a), Error);
  a.state2 = v.data();
  a.state_dtype = DType::f16;
  EXPECT_THROW(optimizer_update(kCpu, h, a), Error);
}

TEST(DecaySegments, SplitsRunsAtRangeEdges) {
  std::vector<ElementRange> r = {{3, 5}, {8, 12}, {20, 21}};
  std::vector<std::tuple<int64_t, int64_t, bool>> got;
  for_decay_segments(r.data(), 3, 4, 20, [&](int64_t b, int64_t e, bool d) { got.emplace_back(b, e, d); });
  std::vector<std::tuple<int64_t, int64_t, bool>> want = {{4, 5, true}, {5, 8, false}, {8, 12, true}, {12, 20, false}};
  EXPECT_EQ(got, want);
  got.clear();
  for_decay_segments(nullptr, 0, 0, 7, [&](int64_t b, int64_t e, bool d) { got.emplace_back(b, e, d); });
  EXPECT_EQ(got, (std::vector<std::tuple<int64_t, int64_t, bool>>{{0, 7, true}}));
  got.clear();
  for_decay_segments(r.data(), 3, 12, 20, [&](int64_t b, int64_t e, bool d) { got.emplace_back(b, e, d); });
  EXPECT_EQ(got, (std::vector<std::tuple<int64_t, int64_t, bool>>{{12, 20, false}}));
}

TEST(Cast, MatchesScalarConversionsIncludingNanAndInf) {
  KernelSettings keep;
  const int64_t n = 70001;
  std::mt19937 rng(5);
  std::vector<float> src(static_cast<std::size_t>(n));
  for (auto& x : src) x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
  src[0] = INFINITY, src[1] = -INFINITY, src[2] = NAN, src[3] = 65520.0f, src[4] = 1e-8f;
  src[5] = 1e-39f, src[6] = -3e-40f;  // denormals: rounded, not flushed
  for (const char* isa : isas()) {
    set_cpu_isa(isa);
    for (DType t : {DType::bf16, DType::f16}) {
      std::vector<uint16_t> half(static_cast<std::size_t>(n));
      std::vector<float> back(static_cast<std::size_t>(n));
      cast(kCpu, TensorView::flat(src.data(), DType::f32, n), TensorView::flat(half.data(), t, n));
      cast(kCpu, TensorView::flat(half.data(), t, n), TensorView::flat(back.data(), DType::f32, n));
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float x = src[static_cast<std::size_t>(i)];
        const uint16_t want = t == DType::bf16 ? f32_to_bf16_bits(x) : f32_to_f16_bits(x);
        const uint16_t got = half[static_cast<std::size_t>(i)];
        const float want_back = t == DType::bf16 ? bf16_bits_to_f32(want) : f16_bits_to_f32(want);
        if (std::isnan(x) && t == DType::f16)  // (bf16 NaNs must keep their bits, below)
          wrong += !std::isnan(back[static_cast<std::size_t>(i)]);
        else
          wrong += got != want ||
                   std::bit_cast<uint32_t>(back[static_cast<std::size_t>(i)]) != std::bit_cast<uint32_t>(want_back);
      }
      EXPECT_EQ(wrong, 0) << isa << " " << dtype_name(t);
    }
  }
}

TEST(Scale, ScalesAndFlagsNonFinite) {
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    const int64_t n = 100003;
    Buf x(t, n);
    for (int64_t i = 0; i < n; ++i) x.set(i, static_cast<float>(i % 100) - 50.0f);
    float found = 0.0f;
    scale(kCpu, TensorView::flat(x.data(), t, n), 0.5f, &found);
    EXPECT_EQ(found, 0.0f);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += x.get(i) != (static_cast<float>(i % 100) - 50.0f) * 0.5f;
    EXPECT_EQ(wrong, 0);
    x.set(n - 3, INFINITY);
    scale(kCpu, TensorView::flat(x.data(), t, n), 1.0f, &found);
    EXPECT_EQ(found, 1.0f) << dtype_name(t);
    found = 0.0f;
    x.set(n - 3, NAN);
    scale(kCpu, TensorView::flat(x.data(), t, n), 2.0f, &found);
    EXPECT_EQ(found, 1.0f) << dtype_name(t);
  }
}

// dst += src: each sum is the exact (f64) sum rounded once to the dtype, on every ISA and thread count;
// Inf and NaN propagate (an overflowing micro-batch must reach the step's non-finite check).
TEST(Add, IsTheF64SumRoundedOnceOnEveryIsaAndThreadCount) {
  KernelSettings keep;
  for (int64_t n : {1, 7, 15, 17, 4096, 1000003}) {
    std::mt19937 rng(static_cast<uint32_t>(n) + 11);
    std::normal_distribution<float> nd;
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      Buf src(t, n), dst0(t, n), want(t, n);
      for (int64_t i = 0; i < n; ++i) {
        src.set(i, nd(rng));
        dst0.set(i, nd(rng) * 3.0f);
      }
      if (n > 5) src.set(n - 2, INFINITY), dst0.set(n - 4, NAN);
      for (int64_t i = 0; i < n; ++i)
        want.set(i, static_cast<float>(static_cast<double>(dst0.get(i)) + static_cast<double>(src.get(i))));
      for (const char* isa : isas())
        for (int threads : {1, 2}) {
          set_cpu_isa(isa);
          set_cpu_threads(threads);
          Buf dst = dst0;
          add(kCpu, TensorView::flat(src.data(), t, n), TensorView::flat(dst.data(), t, n));
          int64_t wrong = 0;
          for (int64_t i = 0; i < n; ++i)
            wrong += std::isnan(want.get(i)) ? !std::isnan(dst.get(i)) : dst.get(i) != want.get(i);
          EXPECT_EQ(wrong, 0) << "n=" << n << " " << dtype_name(t) << " " << isa << " threads " << threads;
        }
    }
  }
  std::vector<float> a(4), b(5);
  EXPECT_THROW(add(kCpu, TensorView::flat(a.data(), DType::f32, 4), TensorView::flat(b.data(), DType::f32, 5)), Error);
}

TEST(SumSquares, MatchesF64AndIsDeterministicAcrossThreadsAndIsas) {
  KernelSettings keep;
  for (int64_t n : {1, 7, 15, 17, 4096, 1000003}) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::normal_distribution<float> nd;
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      Buf x(t, n);
      double want = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        x.set(i, nd(rng));
        want += static_cast<double>(x.get(i)) * x.get(i);
      }
      std::vector<float> results;
      for (const char* isa : isas())
        for (int threads : {1, 2}) {
          set_cpu_isa(isa);
          set_cpu_threads(threads);
          float got = -1.0f;
          sum_squares(kCpu, TensorView::flat(x.data(), t, n), &got);
          results.push_back(got);
        }
      EXPECT_NEAR(results[0], want, 1e-5 * want) << "n=" << n << " " << dtype_name(t);
      for (float r : results) EXPECT_EQ(std::bit_cast<uint32_t>(r), std::bit_cast<uint32_t>(results[0]));
    }
  }
}

TEST(AddSumSquares, IsTheAddThenTheSumOfSquaresInOnePass) {
  KernelSettings keep;
  for (int64_t n : {1, 7, 15, 17, 4096, 1000003}) {
    std::mt19937 rng(static_cast<uint32_t>(n) + 7);
    std::normal_distribution<float> nd;
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      Buf src(t, n), dst0(t, n);
      for (int64_t i = 0; i < n; ++i) {
        src.set(i, nd(rng));
        dst0.set(i, nd(rng) * 2.0f);
      }
      // The reference: each element the f64 sum rounded once to t, then the f64 sum of their squares.
      Buf want(t, n);
      double want_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        want.set(i, static_cast<float>(static_cast<double>(dst0.get(i)) + static_cast<double>(src.get(i))));
        want_sum += static_cast<double>(want.get(i)) * want.get(i);
      }
      for (const char* isa : isas())
        for (int threads : {1, 2}) {
          set_cpu_isa(isa);
          set_cpu_threads(threads);
          Buf fused = dst0, twice = dst0;
          float got = -1.0f, apart = -2.0f;
          add_sum_squares(kCpu, TensorView::flat(src.data(), t, n), TensorView::flat(fused.data(), t, n), &got);
          add(kCpu, TensorView::flat(src.data(), t, n), TensorView::flat(twice.data(), t, n));
          sum_squares(kCpu, TensorView::flat(twice.data(), t, n), &apart);
          const std::string where = fmt::format("n={} {} {} threads {}", n, dtype_name(t), isa, threads);
          int64_t wrong = 0;
          for (int64_t i = 0; i < n; ++i) wrong += fused.get(i) != want.get(i);
          EXPECT_EQ(wrong, 0) << where;
          EXPECT_NEAR(got, want_sum, 1e-5 * want_sum) << where;
          EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(apart)) << where;
        }
    }
  }
  std::vector<float> a(4), b(5);
  float out = 0.0f;
  EXPECT_THROW(
      add_sum_squares(kCpu, TensorView::flat(a.data(), DType::f32, 4), TensorView::flat(b.data(), DType::f32, 5), &out),
      Error);
}

TEST(Pack, RoundTripsAtOffsets) {
  std::vector<float> a = {1, 2, 3}, b = {4, 5}, c(7);
  std::iota(c.begin(), c.end(), 10.0f);
  std::vector<TensorView> ts = {TensorView::flat(a.data(), DType::f32, 3), TensorView::flat(b.data(), DType::f32, 2),
                                TensorView::flat(c.data(), DType::f32, 7)};
  std::vector<int64_t> off = {0, 4, 8};
  std::vector<float> flat(16, -1.0f);
  pack(kCpu, ts, off, TensorView::flat(flat.data(), DType::f32, 16));
  EXPECT_EQ(flat, (std::vector<float>{1, 2, 3, -1, 4, 5, -1, -1, 10, 11, 12, 13, 14, 15, 16, -1}));
  std::fill(a.begin(), a.end(), 0.0f);
  std::fill(c.begin(), c.end(), 0.0f);
  unpack(kCpu, TensorView::flat(flat.data(), DType::f32, 16), off, ts);
  EXPECT_EQ(a, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(c[6], 16.0f);
  off[2] = 10;
  EXPECT_THROW(pack(kCpu, ts, off, TensorView::flat(flat.data(), DType::f32, 16)), Error);
}

}  // namespace
}  // namespace zs::kernels
