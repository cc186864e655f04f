// zsmem estimate as a user runs it: nonsense input exits 2 with a clear message; the numbers are DESIGN §3's
// formulas over the padded layout; DeepSpeed's figure sits beside ours.
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/run_command.h"

namespace {

// The line estimate prints about the model: "N parameters in U units (largest L)".
std::string fmt_params(int64_t params, int units, int64_t largest) {
  return std::to_string(params) + " parameters in " + std::to_string(units) + " units (largest " +
         std::to_string(largest) + ")";
}

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
      {"estimate --model gpt:attn=flash", "is not auto, plain or fused"},
      {"estimate --params 100 --largest-unit 10 --world 0", "--world: '0' is not a positive number"},
      {"estimate --params 100 --largest-unit 10 --batch -1", "--batch: '-1' is not a number >= 0"},
      {"estimate --params 100 --largest-unit 10 --ranks-per-node 0", "--ranks-per-node: '0' is not a positive number"},
      {"estimate", "give the model one way"},
      {"estimate --params 100 --largest-unit 10 --offload everything", "--offload"},
      {"estimate --params 100 --largest-unit 10 --host-memory -1", "--host-memory: '-1' is not a size"},
      {"estimate --params 100 --largest-unit 10 --device-memory 80x", "--device-memory: '80x' is not a size"},
      {"estimate --model gpt:d=64 --checkpoint-activations", "needs --batch"},
      {"estimate --params 100 --largest-unit 10 --offload optimizer --offload-ratio 0", "not in (0, 1]"},
      {"estimate --params 100 --largest-unit 10 --offload optimizer --offload-ratio 1.5", "not in (0, 1]"},
      {"frobnicate", "A subcommand is required"}};
  for (const auto& [args, want] : cases) {
    const zs::test::CommandResult p = zsmem(args);
    EXPECT_EQ(p.rc, 2) << args << "\n" << p.output;
    EXPECT_NE(p.output.find(want), std::string::npos) << args << "\n" << p.output;
  }
}

// Hybrid sharding (zero.hybrid_group in --config): each rank holds what a world of one group would (but for
// the control messages' buffer, which spans the world: 481 floats per rank), and a group size that does not
// divide the world is refused.
TEST(Zsmem, HybridGroupsShardWithinTheGroup) {
  const std::string yaml = (std::filesystem::temp_directory_path() / "zsmem_hybrid_test.yaml").string();
  std::ofstream(yaml) << "zero:\n  stage: 3\n  hybrid_group: 2\n";
  const std::string model = " --params 1e6 --largest-unit 1e5 --stage 3 --json";
  const zs::test::CommandResult hybrid = zsmem("estimate --config " + yaml + model + " --world 8");
  const zs::test::CommandResult two = zsmem("estimate" + model + " --world 2");
  ASSERT_EQ(hybrid.rc, 0) << hybrid.output;
  ASSERT_EQ(two.rc, 0) << two.output;
  auto h = nlohmann::json::parse(hybrid.output), t = nlohmann::json::parse(two.output);
  EXPECT_EQ(h[0]["bytes"]["other"].get<int64_t>() - t[0]["bytes"]["other"].get<int64_t>(), 481 * 4 * (8 - 2));
  h[0]["bytes"].erase("other");
  t[0]["bytes"].erase("other");
  EXPECT_EQ(h[0]["bytes"], t[0]["bytes"]) << hybrid.output;
  EXPECT_EQ(h[0]["world"], 8);
  const zs::test::CommandResult bad = zsmem("estimate --config " + yaml + model + " --world 3");
  EXPECT_EQ(bad.rc, 2) << bad.output;
  EXPECT_NE(bad.output.find("does not divide --world 3"), std::string::npos) << bad.output;
}

// --prefetch sizes the stage-3 gather pool at prefetch + 1 units unless --max-live is given; the options
// given override a --config's values, and a config's offload is its rows' default.
TEST(Zsmem, PrefetchAndOptionsOverTheConfig) {
  auto gather = [](const std::string& args) {
    const zs::test::CommandResult p = zsmem("estimate --params 1e6 --largest-unit 1e3 --stage 3 --json" + args);
    EXPECT_EQ(p.rc, 0) << args << "\n" << p.output;
    return p.rc == 0 ? nlohmann::json::parse(p.output)[0]["bytes"]["gather_buffers"].get<int64_t>() : -1;
  };
  const int64_t unit = gather(" --max-live 1 --prefetch 0");
  EXPECT_EQ(unit, 1008 * 4);        // 1000 parameters padded to a multiple of 16, f32
  EXPECT_EQ(gather(""), 4 * unit);  // zero.max_live_units' default
  EXPECT_EQ(gather(" --prefetch 6"), 7 * unit);
  EXPECT_EQ(gather(" --prefetch 1"), 4 * unit);  // already enough
  EXPECT_EQ(gather(" --prefetch 6 --max-live 9"), 9 * unit);
  const zs::test::CommandResult bad = zsmem("estimate --params 1e6 --largest-unit 1e3 --prefetch 4 --max-live 3");
  EXPECT_EQ(bad.rc, 2) << bad.output;
  EXPECT_NE(bad.output.find("--max-live, --prefetch: zero.max_live_units (3) must be at least prefetch + 1 (5)"),
            std::string::npos)
      << bad.output;

  const std::string yaml = (std::filesystem::temp_directory_path() / "zsmem_override_test.yaml").string();
  std::ofstream(yaml) << "zero:\n  max_live_units: 8\noffload:\n  optimizer: cpu\n";
  EXPECT_EQ(gather(" --config " + yaml), 8 * unit);
  EXPECT_EQ(gather(" --config " + yaml + " --max-live 5"), 5 * unit);
  const zs::test::CommandResult rows =
      zsmem("estimate --params 1e6 --largest-unit 1e3 --stage 3 --json --config " + yaml);
  const zs::test::CommandResult none =
      zsmem("estimate --params 1e6 --largest-unit 1e3 --stage 3 --json --offload none --config " + yaml);
  ASSERT_EQ(rows.rc, 0) << rows.output;
  ASSERT_EQ(none.rc, 0) << none.output;
  EXPECT_EQ(nlohmann::json::parse(rows.output)[0]["offload"], "optimizer");
  EXPECT_EQ(nlohmann::json::parse(none.output)[0]["offload"], "none");
}

// --accumulation keeps the gradient shard at stages 2-3 (every micro-batch reduced into it) unless --no-sync,
// which keeps every unit's full gradient: 1000 units of 1000 parameters, padded at world 4 to 1024 (shards
// of 256), f32.
TEST(Zsmem, AccumulationKeepsTheShardUnlessNoSync) {
  auto grads = [](const std::string& args) {
    const zs::test::CommandResult p =
        zsmem("estimate --params 1e6 --largest-unit 1e3 --stage 3 --world 4 --json" + args);
    EXPECT_EQ(p.rc, 0) << args << "\n" << p.output;
    return p.rc == 0 ? nlohmann::json::parse(p.output)[0]["bytes"]["grads"].get<int64_t>() : -1;
  };
  const int64_t one = grads("");
  EXPECT_EQ(one, 1000 * 256 * 4 + 2 * 1024 * 4);  // the shards, and the pool's two buffers
  EXPECT_EQ(grads(" --accumulation 8"), one);
  EXPECT_EQ(grads(" --accumulation 8 --no-sync"), 1000 * 1024 * 4);
  EXPECT_EQ(grads(" --no-sync"), one);  // without accumulation there is nothing to keep
}

// With the optimizer offloaded the micro-batches add up on the host by default: no gradient shard on the
// device (the pool's two buffers only), two staging buffers of the largest shard on the host; with
// --offload-accumulate device the shards are back on the device and the staging is gone.
TEST(Zsmem, OffloadedAccumulationAddsUpOnTheHostUnlessTold) {
  auto bytes = [](const std::string& args) {
    const zs::test::CommandResult p = zsmem(
        "estimate --params 1e6 --largest-unit 1e3 --stage 3 --world 4 --offload optimizer --accumulation 8 --json" +
        args);
    EXPECT_EQ(p.rc, 0) << args << "\n" << p.output;
    if (p.rc != 0) return std::pair<int64_t, int64_t>{-1, -1};
    const nlohmann::json row = nlohmann::json::parse(p.output)[0];
    return std::pair{row["bytes"]["grads"].get<int64_t>(), row["host_bytes"]["offload_staging"].get<int64_t>()};
  };
  const auto [grads, staging] = bytes("");
  EXPECT_EQ(grads, 2 * 1024 * 4);
  EXPECT_EQ(staging, 2 * 256 * 4);
  EXPECT_EQ(bytes(" --offload-accumulate host"), bytes(""));
  const auto [device_grads, device_staging] = bytes(" --offload-accumulate device");
  EXPECT_EQ(device_grads, 1000 * 256 * 4 + 2 * 1024 * 4);
  EXPECT_EQ(device_staging, 0);
  EXPECT_NE(zsmem("estimate --params 1e6 --largest-unit 1e3 --offload-accumulate gpu").rc, 0);
}

// A safetensors file as a publisher writes it: the 8-byte header length, the JSON header, zeroed data.
void write_safetensors(const std::filesystem::path& p,
                       const std::vector<std::pair<std::string, std::vector<int64_t>>>& t, const std::string& dtype,
                       int bytes) {
  nlohmann::json h = nlohmann::json::object();
  int64_t at = 0;
  for (const auto& [name, shape] : t) {
    int64_t n = bytes;
    for (int64_t d : shape) n *= d;
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {at, at + n}}};
    at += n;
  }
  const std::string header = h.dump();
  std::ofstream f(p, std::ios::binary);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * i)));
  f << header << std::string(static_cast<std::size_t>(at), '\0');
}

// --weights: a Llama-shaped model in Hugging Face's sharded layout (bf16, two files and the index). The
// tensors group into one unit per block, the embedding, the final norm and the head (the count, the
// parameters and the largest unit checked by hand); the files' bf16 becomes the compute dtype; a missing
// file is a named error.
TEST(Zsmem, WeightsOfAPublishedModelGroupIntoBlocks) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "zsmem_weights_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const int64_t d = 64, V = 100, F = 176;
  auto block = [&](int l) {
    const std::string b = "model.layers." + std::to_string(l) + ".";
    return std::vector<std::pair<std::string, std::vector<int64_t>>>{
        {b + "self_attn.q_proj.weight", {d, d}},     {b + "self_attn.k_proj.weight", {d, d}},
        {b + "self_attn.v_proj.weight", {d, d}},     {b + "self_attn.o_proj.weight", {d, d}},
        {b + "mlp.gate_proj.weight", {F, d}},        {b + "mlp.up_proj.weight", {F, d}},
        {b + "mlp.down_proj.weight", {d, F}},        {b + "input_layernorm.weight", {d}},
        {b + "post_attention_layernorm.weight", {d}}};
  };
  auto first = block(0), second = block(1);
  first.push_back({"model.embed_tokens.weight", {V, d}});
  second.push_back({"model.norm.weight", {d}});
  second.push_back({"lm_head.weight", {V, d}});
  write_safetensors(dir / "model-00001-of-00002.safetensors", first, "BF16", 2);
  write_safetensors(dir / "model-00002-of-00002.safetensors", second, "BF16", 2);
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [name, shape] : first) map[name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, shape] : second) map[name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", {}}, {"weight_map", map}}.dump();
  const int64_t per_block = 4 * d * d + 3 * F * d + 2 * d, total = 2 * per_block + 2 * V * d + d;
  const zs::test::CommandResult text = zsmem("estimate --weights " + dir.string() + " --world 2 --stage 3");
  ASSERT_EQ(text.rc, 0) << text.output;
  EXPECT_NE(text.output.find(fmt_params(total, 5, per_block)), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("bf16 in the files"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("compute bf16"), std::string::npos) << text.output;
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  const zs::test::CommandResult missing = zsmem("estimate --weights " + dir.string());
  EXPECT_EQ(missing.rc, 1) << missing.output;
  EXPECT_NE(missing.output.find("which does not exist"), std::string::npos) << missing.output;
  std::filesystem::remove_all(dir);
}

// --manifest: the checkpoint's tensors make the units, and (without --config) its precision, optimizer and
// world size are the defaults. Here SGD without momentum (no state at all), bf16, saved at world 2.
TEST(Zsmem, AManifestBringsItsModelAndItsSettings) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "zsmem_manifest_test";
  std::filesystem::create_directories(dir);
  nlohmann::json tensors = nlohmann::json::array();
  for (int u = 0; u < 3; ++u)
    tensors.push_back({{"name", "u" + std::to_string(u) + ".w"},
                       {"unit", "u" + std::to_string(u)},
                       {"shape", {1000}},
                       {"dtype", "f32"},
                       {"trainable", true},
                       {"weight_decay", true},
                       {"pieces", {{0, 0, 1000}}}});
  const nlohmann::json manifest = {
      {"format", "zeroshard-checkpoint"},
      {"version", 1},
      {"step", 7},
      {"world_size", 2},
      {"stage", 2},
      {"param_dtype", "bf16"},
      {"optimizer", {{"type", "sgd"}, {"states", {"momentum_buffer"}}, {"hyper", {{"lr", 0.1}, {"momentum", 0.0}}}}},
      {"schedule", {{"type", "constant"}, {"warmup_steps", 0}, {"total_steps", 0}, {"min_lr_ratio", 0.0}}},
      {"loss_scaler",
       {{"scale", 1.0}, {"window", 1000}, {"hysteresis", 2}, {"clean_steps", 0}, {"windows_to_wait", 0}}},
      {"user_state", ""},
      {"files", {{{"name", "rank-00000.safetensors"}, {"bytes", 1}, {"xxh64", "0000000000000001"}}}},
      {"tensors", tensors}};
  std::ofstream(dir / "manifest.json") << manifest.dump(1);
  const zs::test::CommandResult p = zsmem("estimate --stage 1 --json --manifest " + dir.string());
  const zs::test::CommandResult table = zsmem("estimate --stage 1 --manifest " + dir.string());
  const zs::test::CommandResult adamw =
      zsmem("estimate --stage 1 --json --optimizer adamw --world 1 --manifest " + dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_EQ(p.rc, 0) << p.output;
  ASSERT_EQ(adamw.rc, 0) << adamw.output;
  EXPECT_NE(table.output.find("saved at world 2, ZeRO-2, sgd bf16"), std::string::npos) << table.output;
  const nlohmann::json row = nlohmann::json::parse(p.output)[0], a = nlohmann::json::parse(adamw.output)[0];
  EXPECT_EQ(row["world"], 2);
  // 3 units of 1000 padded to 1024 (a multiple of 2 x 16) at world 2: bf16 parameters, an f32 master shard
  // (stage 1 keeps the parameters whole), no state.
  EXPECT_EQ(row["bytes"]["params"].get<int64_t>(), 3 * 1024 * 2);
  EXPECT_EQ(row["bytes"]["master"].get<int64_t>(), 3 * 512 * 4);
  EXPECT_EQ(row["bytes"]["optim_state"].get<int64_t>(), 0);
  // The options given override it: AdamW's two f32 states at world 1 (1000 padded to 1008).
  EXPECT_EQ(a["world"], 1);
  EXPECT_EQ(a["bytes"]["optim_state"].get<int64_t>(), 3 * 1008 * 8);
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
  // bf16 optimizer states: m and v at 2 bytes each, on the device or (offloaded) on the host.
  const zs::test::CommandResult half = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload none optimizer --states bf16 "
      "--json");
  ASSERT_EQ(half.rc, 0) << half.output;
  const auto hr = nlohmann::json::parse(half.output);
  ASSERT_EQ(hr.size(), 2u);
  EXPECT_EQ(hr[0]["bytes"]["optim_state"].get<int64_t>(), 1000 * 4 * 256);
  EXPECT_EQ(hr[1]["host_bytes"]["optim_state"].get<int64_t>(), 1000 * 4 * 256);
  // The optimizer's state on disk (offload nvme): each unit's 256-element shard of master, m and v is 3 parts
  // of 1 KiB, each padded to 4 KiB in the file; the host keeps 4 buffers of one region (and 4 KiB to align
  // them) instead, and no master. DeepSpeed's estimators have no NVMe figure.
  const zs::test::CommandResult disk =
      zsmem("estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload optimizer nvme --json");
  ASSERT_EQ(disk.rc, 0) << disk.output;
  const auto dr = nlohmann::json::parse(disk.output);
  ASSERT_EQ(dr.size(), 2u);
  EXPECT_EQ(dr[0]["disk_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(dr[0]["host_bytes"]["master"].get<int64_t>(), 1000 * 4 * 256);
  EXPECT_EQ(dr[1]["offload"], "nvme");
  EXPECT_EQ(dr[1]["disk_bytes"].get<int64_t>(), 1000 * 3 * 4096);
  EXPECT_EQ(dr[1]["host_bytes"]["master"].get<int64_t>(), 0);
  EXPECT_EQ(dr[1]["host_bytes"]["optim_state"].get<int64_t>(), 4 * 3 * 4096 + 4096);
  EXPECT_EQ(dr[1]["bytes"], dr[0]["bytes"]) << "the device holds the same";
  EXPECT_TRUE(dr[1]["deepspeed_estimate"].is_null());
  // The parameters on disk too (nvme+nvme-params): each unit's f32 shard (the master is on disk) is 1 KiB,
  // padded to 4 KiB in a second file; the host keeps 5 slots of 4 KiB (and 4 KiB to align them) instead of
  // the shards.
  const zs::test::CommandResult both = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload nvme+params nvme+nvme-params "
      "--json");
  ASSERT_EQ(both.rc, 0) << both.output;
  const auto br = nlohmann::json::parse(both.output);
  ASSERT_EQ(br.size(), 2u);
  EXPECT_EQ(br[0]["host_bytes"]["params"].get<int64_t>(), 1000 * 4 * 256);
  EXPECT_EQ(br[1]["offload"], "nvme+nvme-params");
  EXPECT_EQ(br[1]["disk_bytes"].get<int64_t>(), 1000 * 3 * 4096 + 1000 * 4096);
  EXPECT_EQ(br[1]["host_bytes"]["params"].get<int64_t>(), 5 * 4096 + 4096);
  EXPECT_EQ(br[1]["bytes"], br[0]["bytes"]) << "the device holds the same";
  EXPECT_TRUE(br[1]["deepspeed_estimate"].is_null());
  // And the gradient shards (nvme+nvme-grads+nvme-params): each unit's f32 shard is 1 KiB, padded to 4 KiB in
  // a third file; the host keeps 4 slots of 4 KiB (and 4 KiB to align them) instead of the shards.
  const zs::test::CommandResult all = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload nvme+nvme-params "
      "nvme+nvme-grads+nvme-params --json");
  ASSERT_EQ(all.rc, 0) << all.output;
  const auto ar = nlohmann::json::parse(all.output);
  ASSERT_EQ(ar.size(), 2u);
  EXPECT_EQ(ar[0]["host_bytes"]["grads"].get<int64_t>(), 1000 * 4 * 256);
  EXPECT_EQ(ar[1]["offload"], "nvme+nvme-grads+nvme-params");
  EXPECT_EQ(ar[1]["disk_bytes"].get<int64_t>(), 1000 * 3 * 4096 + 1000 * 4096 + 1000 * 4096);
  EXPECT_EQ(ar[1]["host_bytes"]["grads"].get<int64_t>(), 4 * 4096 + 4096);
  EXPECT_EQ(ar[1]["host_bytes"]["params"], ar[0]["host_bytes"]["params"]);
  EXPECT_EQ(ar[1]["bytes"], ar[0]["bytes"]) << "the device holds the same";
  EXPECT_EQ(zsmem("estimate --params 1000 --largest-unit 10 --optimizer sgd --states bf16").rc, 2);
  const zs::test::CommandResult table =
      zsmem("estimate --model gpt:d=64,L=2,V=256,T=32 --world 1 2 --device-memory 0.001");
  ASSERT_EQ(table.rc, 0) << table.output;
  EXPECT_NE(table.output.find("DeepSpeed"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("NO"), std::string::npos) << table.output;  // 1 MiB is too small
  // Sizes with units: the bare 0.001 (GiB) above, in MiB and in decimal kB.
  for (const char* size : {"1.024MiB", "1073.741824KB"}) {
    const zs::test::CommandResult same =
        zsmem(std::string("estimate --model gpt:d=64,L=2,V=256,T=32 --world 1 2 --device-memory ") + size);
    ASSERT_EQ(same.rc, 0) << same.output;
    EXPECT_NE(same.output.find("fits device 1.02 MiB"), std::string::npos) << same.output;
    EXPECT_EQ(same.output.substr(same.output.find('\n')), table.output.substr(table.output.find('\n'))) << size;
  }
}

// The example's fused attention (attn=fused) changes the activations only: no batch x heads x T^2
// probabilities (2 x 4 x 64^2 bf16, and one sequence's gradients: 4 x 64^2), one f32 log-sum-exp per
// query and head kept per block (2 blocks) plus the backward's deltas. attn=auto (the default, as in
// gpt_train) is fused on the GPU in bf16 and plain in f32.
TEST(Zsmem, FusedAttentionChangesTheActivationsOnly) {
  const std::string model = "estimate --model gpt:d=64,L=2,V=256,T=64,H=4";
  const std::string args = " --world 1 --stage 3 --batch 2 --json", bf16 = " --precision bf16" + args;
  auto activations = [&](const std::string& command) {
    const zs::test::CommandResult r = zsmem(command);
    EXPECT_EQ(r.rc, 0) << r.output;
    return r.rc == 0 ? nlohmann::json::parse(r.output)[0] : nlohmann::json::object();
  };
  const auto p = activations(model + ",attn=plain" + bf16), f = activations(model + ",attn=fused" + bf16);
  EXPECT_EQ(p["bytes"], f["bytes"]);
  EXPECT_EQ(p["host_bytes"], f["host_bytes"]);
  const double probs = 2.0 * (2 * 4 * 64 * 64 + 4 * 64 * 64), lse = 4.0 * (2 + 1) * 2 * 4 * 64;
  EXPECT_DOUBLE_EQ(p["activations"].get<double>() - f["activations"].get<double>(), probs - lse);
  EXPECT_EQ(activations(model + bf16)["activations"], f["activations"]);
  EXPECT_EQ(activations(model + args)["activations"], activations(model + ",attn=plain" + args)["activations"]);
  const zs::test::CommandResult table = zsmem(model + " --precision bf16 --batch 2");
  EXPECT_NE(table.output.find("(fused attention)"), std::string::npos) << table.output;
  const zs::test::CommandResult f32 = zsmem(model + " --batch 2");
  EXPECT_NE(f32.output.find("(plain attention)"), std::string::npos) << f32.output;
}

// On the GPU the example also stages each batch's tokens and targets (2 x 2 x 64 ints) and the loss in
// pinned host memory: the host's activations, the whole host column at stage 3 without offload.
TEST(Zsmem, TheGpuExampleStagesItsBatchOnTheHost) {
  const std::string cmd = "estimate --model gpt:d=64,L=2,V=256,T=64,H=4 --world 1 --stage 3 --batch 2 --json";
  const zs::test::CommandResult gpu = zsmem(cmd), cpu = zsmem(cmd + " --cpu");
  ASSERT_EQ(gpu.rc, 0) << gpu.output;
  ASSERT_EQ(cpu.rc, 0) << cpu.output;
  const auto g = nlohmann::json::parse(gpu.output)[0], c = nlohmann::json::parse(cpu.output)[0];
  EXPECT_EQ(g["host_activations"].get<double>(), 2.0 * 4 * 2 * 64 + 4);
  EXPECT_EQ(g["host_total"].get<double>(), g["host_activations"].get<double>());
  EXPECT_EQ(c["host_activations"].get<double>(), 0.0);
}

// Offload moves the f32 master, m and v (and the gradient shard) to the host: 1000 units of 1024 padded
// elements at world 4, stage 3, f32: per unit a 256-element shard. The device keeps the f32 parameter shard
// the gather starts from and the gradient pool; with the parameters offloaded too, only the pools.
TEST(Zsmem, OffloadRowsMoveTheStateToTheHost) {
  const zs::test::CommandResult p = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 1 3 --offload none optimizer optimizer+params "
      "--json");
  ASSERT_EQ(p.rc, 0) << p.output;
  const auto rows = nlohmann::json::parse(p.output);
  ASSERT_EQ(rows.size(), 5u);  // stage 1 with optimizer+params is not a configuration: left out
  const auto find = [&](int stage, const std::string& offload) {
    for (const auto& r : rows)
      if (r["stage"] == stage && r["offload"] == offload) return r;
    ADD_FAILURE() << "no row for stage " << stage << " offload " << offload;
    return rows[0];
  };
  const auto opt = find(3, "optimizer"), all = find(3, "optimizer+params");
  const int64_t shard = 1000 * 256;
  EXPECT_EQ(opt["bytes"]["optim_state"].get<int64_t>(), 0);
  EXPECT_EQ(opt["bytes"]["master"].get<int64_t>(), 0);
  EXPECT_EQ(opt["bytes"]["params"].get<int64_t>(), 4 * shard);
  EXPECT_EQ(opt["bytes"]["grads"].get<int64_t>(), 2 * 4 * 1024);  // the pool only
  EXPECT_EQ(opt["host_bytes"]["master"].get<int64_t>(), 4 * shard);
  EXPECT_EQ(opt["host_bytes"]["optim_state"].get<int64_t>(), 8 * shard);
  EXPECT_EQ(opt["host_bytes"]["grads"].get<int64_t>(), 4 * shard);
  EXPECT_EQ(all["bytes"]["params"].get<int64_t>(), 0);
  // The pools, the norm scratch and the control messages' buffer.
  EXPECT_EQ(all["total"].get<double>(), 2 * 4 * 1024 + 4 * 4 * 1024 + 4 * 1001 + 4 * 481 * 4);
  EXPECT_DOUBLE_EQ(all["deepspeed_estimate"].get<double>(), 4 * 1000);
  EXPECT_DOUBLE_EQ(find(1, "optimizer")["deepspeed_estimate"].get<double>(), 2 * 1e6);
  // DeepSpeed's host figure for stages 1-2 with offload is per node and grows with the whole world: at world 16
  // it is 1e6 x max(4 x 16, 16) x 1.5 per node, shared by 16 ranks on one node or by 8 on each of two.
  auto ds_host = [](const std::string& extra) {
    const zs::test::CommandResult r =
        zsmem("estimate --params 1000000 --largest-unit 1000 --world 16 --stage 2 --offload optimizer --json" + extra);
    EXPECT_EQ(r.rc, 0) << r.output;
    return r.rc == 0 ? nlohmann::json::parse(r.output)[0]["deepspeed_host_estimate"].get<double>() : -1.0;
  };
  EXPECT_DOUBLE_EQ(ds_host(""), 1e6 * 64 * 1.5 / 16);
  EXPECT_DOUBLE_EQ(ds_host(" --ranks-per-node 8"), 1e6 * 64 * 1.5 / 8);
  EXPECT_DOUBLE_EQ(ds_host(" --ranks-per-node 32"), 1e6 * 64 * 1.5 / 16);  // no more ranks on a node than the world
  const zs::test::CommandResult fit =
      zsmem("estimate --params 1000000 --largest-unit 1000 --stage 3 --offload optimizer --host-memory 0.01");
  EXPECT_NE(fit.output.find("NO"), std::string::npos) << fit.output;  // 16 MB of host state in 10 MiB
  // The text's second table: the host by category (1000 units of 1008 at world 1), for the offload row only.
  const std::string table =
      zsmem("estimate --params 1000000 --largest-unit 1000 --stage 3 --offload none optimizer").output;
  const std::size_t host = table.find("host memory per rank, by category:");
  ASSERT_NE(host, std::string::npos) << table;
  EXPECT_NE(table.find("        optimizer |        0 B   3.85 MiB   3.85 MiB   7.69 MiB", host), std::string::npos)
      << table;
  EXPECT_EQ(table.find("             none |", host), std::string::npos) << table;
  const std::string none = zsmem("estimate --params 1000000 --largest-unit 1000 --stage 3").output;
  EXPECT_EQ(none.find("host memory per rank"), std::string::npos) << none;
}

// --offload-ratio (offload.ratio): the optimizer rows keep the first units' optimizer on the device and
// offload the last ones holding that share: 1000 units of 1000 at ratio 0.25 put the last 250 on the host
// (256-element shards at world 4), with no DeepSpeed figure beside them (its estimators know no ratio).
TEST(Zsmem, OffloadRatioSplitsTheOptimizerState) {
  const zs::test::CommandResult p = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload none optimizer delayed "
      "--offload-ratio 0.25 --json");
  ASSERT_EQ(p.rc, 0) << p.output;
  const auto rows = nlohmann::json::parse(p.output);
  ASSERT_EQ(rows.size(), 3u);
  const auto& none = rows[0];
  const auto& part = rows[1];
  const auto& delayed = rows[2];  // the ratio is the streaming optimizer rows' only
  EXPECT_EQ(none["offload_ratio"].get<double>(), 1.0);
  EXPECT_EQ(delayed["offload_ratio"].get<double>(), 1.0);
  EXPECT_EQ(part["offload_ratio"].get<double>(), 0.25);
  const int64_t shard = 256;
  EXPECT_EQ(part["host_bytes"]["optim_state"].get<int64_t>(), 8 * shard * 250);
  EXPECT_EQ(part["host_bytes"]["master"].get<int64_t>(), 4 * shard * 250);
  EXPECT_EQ(part["bytes"]["optim_state"].get<int64_t>(), 8 * shard * 750);
  EXPECT_EQ(part["bytes"]["optim_state"].get<int64_t>() + part["host_bytes"]["optim_state"].get<int64_t>(),
            none["bytes"]["optim_state"].get<int64_t>());
  EXPECT_TRUE(part["deepspeed_estimate"].is_null());
  EXPECT_FALSE(none["deepspeed_estimate"].is_null());
  // A list of shares: one optimizer row each, in the table too.
  const zs::test::CommandResult table = zsmem(
      "estimate --params 1000000 --largest-unit 1000 --world 4 --stage 3 --offload optimizer --offload-ratio 0.25 "
      "0.5 1");
  EXPECT_NE(table.output.find("optimizer 0.25"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("optimizer 0.5"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("        optimizer |"), std::string::npos) << table.output;  // ratio 1
}

}  // namespace
