// WeightFiles: one safetensors file or Hugging Face's sharded layout (index + files), read as one set; the
// split of a save at a maximum file size; and a named error for each way the layout can be wrong.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/weight_files.h"

namespace zs {
namespace {

namespace fs = std::filesystem;

struct Dir {
  fs::path path = fs::temp_directory_path() / ("zs_weights_" + std::to_string(getpid()));
  Dir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Dir() { fs::remove_all(path); }
};

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

std::string error_of(const std::string& path) {
  try {
    WeightFiles w(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Three tensors in two files, f32 and bf16, with the index Hugging Face writes.
struct Sharded {
  std::vector<float> a{1, 2, 3, 4, 5, 6}, b{-1, -2}, c{0.5f, 0.25f, 0.125f};
  std::vector<uint16_t> c16;
  explicit Sharded(const fs::path& dir) {
    for (float x : c) c16.push_back(f32_to_bf16_bits(x));
    std::vector<SafetensorsSource> one = {{"h.0.w", DType::f32, {2, 3}, a.data()},
                                          {"h.0.b", DType::f32, {2}, b.data()}};
    std::vector<SafetensorsSource> two = {{"head.w", DType::bf16, {3}, c16.data()}};
    write_safetensors((dir / weight_shard_name(1, 2)).string(), one);
    write_safetensors((dir / weight_shard_name(2, 2)).string(), two);
    const std::vector<std::string> names = {"h.0.w", "h.0.b", "head.w"};
    const std::vector<int> file_of = {0, 0, 1};
    write_text(dir / kWeightsIndex, weights_index_json(names, file_of, 24 + 8 + 6));
  }
};

TEST(WeightFiles, ShardedLayoutReadsAsOneSet) {
  Dir d;
  Sharded s(d.path);
  for (const std::string& path : {d.path.string(), (d.path / kWeightsIndex).string()}) {
    WeightFiles w(path);
    ASSERT_EQ(w.tensors().size(), 3u) << path;
    EXPECT_EQ(w.tensors()[2].name, "head.w") << "the files in order";
    EXPECT_EQ(w.tensors()[2].dtype, DType::bf16);
    EXPECT_EQ(w.tensors()[2].shape, (std::vector<int64_t>{3}));
    std::vector<float> out(4);
    w.read_f32("h.0.w", 2, 4, out.data());
    EXPECT_EQ(out, (std::vector<float>{3, 4, 5, 6}));
    w.read_f32("head.w", 1, 2, out.data());
    EXPECT_EQ(out[0], 0.25f);
    EXPECT_EQ(out[1], 0.125f);
    EXPECT_EQ(w.bytes_read(), 16u + 4u);  // the slices, not the files
    EXPECT_NE(w.description().find("and its 2 files"), std::string::npos) << w.description();
  }
  const nlohmann::json index = nlohmann::json::parse(std::ifstream(d.path / kWeightsIndex));
  EXPECT_EQ(index["metadata"]["total_size"], 38);
  EXPECT_EQ(index["weight_map"]["head.w"], "model-00002-of-00002.safetensors");
  // One file, given by name or as the directory's only .safetensors.
  fs::remove(d.path / kWeightsIndex);
  fs::remove(d.path / weight_shard_name(2, 2));
  EXPECT_EQ(WeightFiles(d.path.string()).tensors().size(), 2u);
  EXPECT_EQ(WeightFiles((d.path / weight_shard_name(1, 2)).string()).tensors().size(), 2u);
}

TEST(WeightFiles, AWrongLayoutIsANamedError) {
  Dir d;
  Sharded s(d.path);
  const std::string index = (d.path / kWeightsIndex).string();
  write_text(index, "{\"weight_map\": {\"h.0.w\": \"model-00001-of-00002.safetensors\",\n  \"h.0.b\" \"x\"}}");
  std::string e = error_of(index);
  EXPECT_NE(e.find("is not valid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  write_text(index, R"({"metadata": {}})");
  e = error_of(index);
  EXPECT_NE(e.find("\"weight_map\""), std::string::npos) << e;
  write_text(index, R"({"weight_map": {"h.0.w": "model-00003-of-00003.safetensors"}})");
  e = error_of(d.path.string());
  EXPECT_NE(e.find("maps tensor 'h.0.w' to"), std::string::npos) << e;
  EXPECT_NE(e.find("which does not exist"), std::string::npos) << e;
  write_text(index, R"({"weight_map": {"head.w": "model-00001-of-00002.safetensors"}})");
  e = error_of(index);
  EXPECT_NE(e.find("maps tensor 'head.w' to"), std::string::npos) << e;
  EXPECT_NE(e.find("which does not hold it"), std::string::npos) << e;
  write_text(index, R"({"weight_map": {"head.w": "../elsewhere.safetensors"}})");
  e = error_of(index);
  EXPECT_NE(e.find("not a file name beside the index"), std::string::npos) << e;
  fs::remove(index);
  e = error_of(d.path.string());  // two files, no index
  EXPECT_NE(e.find("2 .safetensors files"), std::string::npos) << e;
  e = error_of((d.path / "nothing").string());
  EXPECT_NE(e.find("no such file or directory"), std::string::npos) << e;
}

TEST(WeightFiles, APublishedModelsTensorsGroupIntoBlocks) {
  EXPECT_EQ(weight_unit("model.layers.12.mlp.up_proj.weight"), "model.layers.12");
  EXPECT_EQ(weight_unit("transformer.h.0.attn.c_attn.bias"), "transformer.h.0");
  EXPECT_EQ(weight_unit("model.embed_tokens.weight"), "model.embed_tokens");
  EXPECT_EQ(weight_unit("model.norm.weight"), "model.norm");
  EXPECT_EQ(weight_unit("lm_head.weight"), "lm_head");
  EXPECT_EQ(weight_unit("wte"), "wte");
  EXPECT_EQ(weight_unit("h.3"), "h.3");
  EXPECT_EQ(weight_unit("layer1x.w"), "layer1x");  // digits inside a name are not a block index
}

TEST(WeightFiles, ASaveSplitsInOrderAtTheLimit) {
  const std::vector<int64_t> bytes = {40, 30, 50, 200, 10, 10};
  EXPECT_EQ(plan_weight_files(bytes, 0), (std::vector<int>{0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(plan_weight_files(bytes, 100), (std::vector<int>{0, 0, 1, 2, 3, 3}));  // 200 alone in its file
  EXPECT_EQ(plan_weight_files(bytes, 70), (std::vector<int>{0, 0, 1, 2, 3, 3}));
  EXPECT_EQ(plan_weight_files(bytes, 1), (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(plan_weight_files({}, 100).empty());
  EXPECT_EQ(weight_shard_name(3, 12), "model-00003-of-00012.safetensors");
}

}  // namespace
}  // namespace zs
