// FlatLayout and initialisation: pure arithmetic, checked by brute force.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "core/error.h"
#include "sharding/flat_layout.h"
#include "sharding/init.h"

namespace zs {
namespace {

std::vector<TensorSpec> specs() {
  return {{"w", {37, 53}}, {"b", {53}, true, false}, {"g", {7}, true, false}, {"big", {1000, 3}}};
}

TEST(FlatLayout, AlignedSlotsPaddedToEqualAlignedShards) {
  for (int world = 1; world <= 8; ++world)
    for (int64_t align : {1, 4, 16}) {
      FlatLayout l = make_flat_layout(specs(), world, align);
      ASSERT_EQ(l.slots.size(), 4u);
      int64_t end = 0;
      for (std::size_t i = 0; i < l.slots.size(); ++i) {
        EXPECT_EQ(l.slots[i].offset % align, 0);
        EXPECT_GE(l.slots[i].offset, end);          // in order, no overlap
        EXPECT_LT(l.slots[i].offset - end, align);  // and no gap beyond alignment
        end = l.slots[i].offset + l.slots[i].numel;
      }
      EXPECT_EQ(l.used, end);
      EXPECT_GE(l.padded, l.used);
      EXPECT_EQ(l.padded % (align * world), 0);
      EXPECT_LT(l.padded - l.used, align * world);
      EXPECT_EQ(l.shard * world, l.padded);
      EXPECT_EQ(l.shard % align, 0);
    }
}

TEST(FlatLayout, ShardRangesCoverExactlyTheSelectedElements) {
  for (int world = 1; world <= 5; ++world) {
    FlatLayout l = make_flat_layout(specs(), world, 16);
    const std::vector<bool> sel = {true, false, true, true};
    std::set<int64_t> want, got;
    for (std::size_t i = 0; i < l.slots.size(); ++i)
      if (sel[i])
        for (int64_t e = 0; e < l.slots[i].numel; ++e) want.insert(l.slots[i].offset + e);
    for (int r = 0; r < world; ++r) {
      auto ranges = l.shard_ranges(r, sel);
      for (std::size_t k = 0; k < ranges.size(); ++k) {
        EXPECT_LT(ranges[k].begin, ranges[k].end);
        EXPECT_GE(ranges[k].begin, 0);
        EXPECT_LE(ranges[k].end, l.shard);
        if (k > 0) {
          EXPECT_LT(ranges[k - 1].end, ranges[k].begin);  // sorted, disjoint, merged
        }
        for (int64_t e = ranges[k].begin; e < ranges[k].end; ++e) EXPECT_TRUE(got.insert(l.shard_offset(r) + e).second);
      }
    }
    EXPECT_EQ(got, want) << "world " << world;
  }
}

TEST(FlatLayout, RejectsNonsense) {
  EXPECT_THROW(make_flat_layout(specs(), 0), Error);
  EXPECT_THROW(make_flat_layout(specs(), 2, 0), Error);
  FlatLayout empty = make_flat_layout({}, 3, 16);
  EXPECT_EQ(empty.used, 0);
  EXPECT_EQ(empty.padded, 48);
}

TEST(Init, ValuesDependOnlyOnSeedNameAndIndex) {
  const auto n = init::normal(0.02f, 1337);
  EXPECT_EQ(n.value("h.0/w", 12345), n.value("h.0/w", 12345));
  EXPECT_NE(n.value("h.0/w", 12345), n.value("h.1/w", 12345));
  EXPECT_NE(n.value("h.0/w", 12345), init::normal(0.02f, 1338).value("h.0/w", 12345));
  EXPECT_EQ(init::zeros().value("x", 3), 0.0f);
  EXPECT_EQ(init::ones().value("x", 3), 1.0f);
}

TEST(Init, FillGivesTheSameValuesOnAnyNumberOfThreads) {
  // Large enough for the threaded path, small enough for the single-threaded one; an odd start and length.
  for (const init::Initializer& in : {init::normal(0.02f, 5), init::uniform(-1.0f, 1.0f, 6), init::ones()})
    for (int64_t count : {int64_t{7}, (int64_t{1} << 20) + 13}) {
      std::vector<float> out(static_cast<std::size_t>(count), -9.0f);
      in.fill("h.3.mlp.fc.w", 4321, count, out.data());
      int64_t wrong = 0;
      for (int64_t i = 0; i < count; ++i)
        wrong += out[static_cast<std::size_t>(i)] != in.value("h.3.mlp.fc.w", static_cast<uint64_t>(4321 + i));
      EXPECT_EQ(wrong, 0) << "count " << count;
    }
}

TEST(Init, NormalAndUniformHaveTheirMoments) {
  const int64_t n = 200000;
  double s = 0, s2 = 0, lo = 1e9, hi = -1e9, us = 0;
  const auto nrm = init::normal(2.0f, 5, 1.0f);
  const auto uni = init::uniform(-3.0f, 5.0f, 5);
  for (int64_t i = 0; i < n; ++i) {
    const double x = nrm.value("t", static_cast<uint64_t>(i));
    s += x;
    s2 += x * x;
    const double u = uni.value("t", static_cast<uint64_t>(i));
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    us += u;
  }
  const double mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  EXPECT_NEAR(mean, 1.0, 0.02);  // 5 standard errors of the mean (2/sqrt(2e5) = 0.0045)
  EXPECT_NEAR(sd, 2.0, 0.02);
  EXPECT_GE(lo, -3.0);
  EXPECT_LT(hi, 5.0);
  EXPECT_NEAR(us / n, 1.0, 0.03);
}

}  // namespace
}  // namespace zs
