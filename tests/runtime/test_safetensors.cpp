// safetensors reader and writer: round trips in every dtype, and clear errors for damaged files.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "runtime/safetensors.h"

namespace zs {
namespace {

namespace fs = std::filesystem;

fs::path tmp(const std::string& name) {
  return fs::temp_directory_path() / ("zs_st_" + std::to_string(getpid()) + "_" + name);
}

std::string error_of(const fs::path& p) {
  try {
    SafetensorsFile f(p.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

void write_raw(const fs::path& p, const std::string& header, std::size_t data_bytes, int64_t claimed = -1) {
  std::ofstream f(p, std::ios::binary);
  const uint64_t n = claimed >= 0 ? static_cast<uint64_t>(claimed) : header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header;
  f << std::string(data_bytes, '\0');
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  std::vector<uint16_t> b(5), h(3);
  for (int i = 0; i < 5; ++i) b[static_cast<std::size_t>(i)] = f32_to_bf16_bits(0.5f * i - 1);
  for (int i = 0; i < 3; ++i) h[static_cast<std::size_t>(i)] = f32_to_f16_bits(100.0f * i + 0.25f);
  std::vector<double> d = {3.0, -4.5};
  std::vector<SafetensorsSource> src = {{"layer.w", DType::f32, {2, 3}, a.data()},
                                        {"layer.b", DType::bf16, {5}, b.data()},
                                        {"h", DType::f16, {3}, h.data()},
                                        {"scalar", DType::f64, {2}, d.data()}};
  const fs::path p = tmp("ok.safetensors");
  write_safetensors(p.string(), src, {{"format", "pt"}, {"step", "12"}});
  {
    std::ifstream raw(p, std::ios::binary);
    uint64_t n = 0;
    raw.read(reinterpret_cast<char*>(&n), 8);
    EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";
  }
  SafetensorsFile f(p.string());
  EXPECT_EQ(f.metadata().at("step"), "12");
  ASSERT_EQ(f.tensors().size(), 4u);
  const auto& w = f.tensor("layer.w");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(6);
  f.read_f32(w, 0, 6, got.data());
  EXPECT_EQ(got, a);
  f.read_f32(w, 4, 2, got.data());  // a slice
  EXPECT_EQ(got[0], 1e-3f);
  EXPECT_EQ(got[1], 7.0f);
  f.read_f32(f.tensor("layer.b"), 0, 5, got.data());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], 0.5f * i - 1);
  f.read_f32(f.tensor("h"), 2, 1, got.data());
  EXPECT_EQ(got[0], 200.25f);
  f.read_f32(f.tensor("scalar"), 0, 2, got.data());
  EXPECT_EQ(got[1], -4.5f);
  EXPECT_EQ(f.bytes_read(), 6 * 4 + 2 * 4 + 5 * 2 + 2 + 2 * 8u);
  EXPECT_THROW(f.tensor("nope"), Error);
  EXPECT_THROW(f.read_f32(w, 5, 2, got.data()), Error);
  fs::remove(p);
}

TEST(Safetensors, DamagedFilesAreNamedErrors) {
  const fs::path p = tmp("bad.safetensors");
  const std::string good = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto expect = [&](const std::string& want) {
    const std::string e = error_of(p);
    EXPECT_NE(e.find(p.string()), std::string::npos) << e;
    EXPECT_NE(e.find(want), std::string::npos) << e;
  };
  { std::ofstream(p, std::ios::binary) << "abc"; }
  expect("too short");
  write_raw(p, good, 8, 1 << 20);
  expect("does not fit");
  write_raw(p, good, 4);
  expect("outside the 4 bytes of data");
  write_raw(p, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  expect("need 12");
  write_raw(p, R"({"t":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})", 8);
  expect("dtype I8");
  write_raw(p, R"({"t":{"dtype":"F32","shape":[2]}})", 8);
  expect("data_offsets");
  write_raw(p, R"({"t": [1, 2)", 8);
  expect("not valid JSON");
  write_raw(p, R"({"__metadata__":{"a":1}})", 0);
  expect("__metadata__");
  write_raw(p, good, 8);
  EXPECT_EQ(error_of(p), "no error");
  EXPECT_NE(error_of(tmp("missing")).find("cannot open"), std::string::npos);
  fs::remove(p);
}

}  // namespace
}  // namespace zs
