// zsmem estimate as a user runs it: nonsense input exits 2 with a clear message; the numbers are DESIGN §3's
// formulas over the padded layout; DeepSpeed's figure sits beside ours.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/run_command.h"

namespace {

zs::test::CommandResult zsmem(const std::string& args) {
  return zs::test::run_command(std::string(ZS_ZSMEM_PATH) + " " + args);
}

TEST(Zsmem, NonsenseInputExitsTwoSayingWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {"estimate --params -5 --largest-unit 10", "must be positive"},
      {"estimate --params 100 --largest-unit 10 --stage 7", "--stage"},
      {"estimate --model llama:d=4", "unknown family 'llama'"},
      {"estimate --model gpt:d=-4", "not a positive integer"},
      {"estimate --model gpt:q=4", "unknown key 'q'"},
      {"estimate --params 100 --largest-unit 10 --world 0", "--world"},
      {"estimate", "give the model one way"},
      {"estimate --params 100 --largest-unit 10 --offload optimizer", "offload is not in this version"},
      {"frobnicate", "A subcommand is required"}};
  for (const auto& [args, want] : cases) {
    const zs::test::CommandResult p = zsmem(args);
    EXPECT_EQ(p.rc, 2) << args << "\n" << p.output;
    EXPECT_NE(p.output.find(want), std::string::npos) << args << "\n" << p.output;
  }
}

// 1000 units of 1000 parameters at world 4, f32 AdamW: each unit pads to 1024 (a multiple of 4 x 16), so
// stage 3 holds 16 B x 1024 / 4 per unit (master = params, grads shard, m, v) plus 4 gather buffers.
TEST(Zsmem, EstimateFollowsThePaddedLayout) {
  const zs::test::CommandResult p = zsmem("estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --json");
  ASSERT_EQ(p.rc, 0) << p.output;
  const auto rows = nlohmann::json::parse(p.output);
  ASSERT_EQ(rows.size(), 1u);
  const auto& b = rows[0]["bytes"];
  EXPECT_EQ(b["params"].get<int64_t>(), 1000 * 4 * 256);
  EXPECT_EQ(b["optim_state"].get<int64_t>(), 1000 * 8 * 256);
  EXPECT_EQ(b["grads"].get<int64_t>(), 1000 * 4 * 256 + 2 * 4 * 1024);
  EXPECT_EQ(b["gather_buffers"].get<int64_t>(), 4 * 4 * 1024);
  EXPECT_DOUBLE_EQ(rows[0]["deepspeed_estimate"].get<double>(), 4 * 1000 + 18 * 1e6 / 4);
  const zs::test::CommandResult table =
      zsmem("estimate --model gpt:d=64,L=2,V=256,T=32 --world 1 2 --device-memory 0.001");
  ASSERT_EQ(table.rc, 0) << table.output;
  EXPECT_NE(table.output.find("DeepSpeed"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("NO"), std::string::npos) << table.output;  // 1 MiB is too small
}

}  // namespace
