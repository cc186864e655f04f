// The checkpoint format on its own: the manifest round-trips and rejects damage with named errors; pieces
// cover every tensor exactly for any layout and writer count; durable file writes report a full disk.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <random>

#include "core/error.h"
#include "runtime/checkpoint.h"
#include "runtime/file_io.h"
#include "runtime/safetensors.h"

namespace zs::ckpt {
namespace {

namespace fs = std::filesystem;

Manifest sample() {
  Manifest m;
  m.step = 42;
  m.world_size = 2;
  m.stage = 3;
  m.param_dtype = DType::bf16;
  m.optimizer = "adamw";
  m.states = state_names("adamw");
  m.hyper = {{"lr", 0.003}, {"beta2", 0.95}};
  m.schedule = Schedule{ScheduleKind::cosine, 10, 100, 0.1};
  m.scaler.scale = 1024;
  m.scaler.clean_steps = 7;
  m.user_state = "{\"tokens\": 123}";
  m.files = {{"rank-00000.safetensors", {100, 0xdeadbeefcafef00dull}}, {"rank-00001.safetensors", {90, 1}}};
  m.tensors.push_back({"h.0.w", "h.0", {3, 5}, true, true, DType::f32, {{0, 0, 8}, {1, 8, 7}}});
  m.tensors.push_back({"h.0.mask", "h.0", {4}, false, false, DType::bf16, {{1, 0, 4}}});
  return m;
}

std::string parse_error(const std::string& text) {
  try {
    parse_manifest(text, "m.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

std::string replaced(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

TEST(CheckpointManifest, RoundTrips) {
  const Manifest m = sample();
  const Manifest back = parse_manifest(to_json(m), "m.json");
  EXPECT_EQ(to_json(back), to_json(m));
  EXPECT_EQ(back.files[0].digest.xxh64, 0xdeadbeefcafef00dull);
  EXPECT_EQ(back.tensors[1].dtype, DType::bf16);
  EXPECT_EQ(back.schedule.kind, ScheduleKind::cosine);
  EXPECT_EQ(back.scaler.clean_steps, 7);
  EXPECT_EQ(back.user_state, m.user_state);
}

TEST(CheckpointManifest, DamageIsNamed) {
  const std::string good = to_json(sample());
  EXPECT_NE(parse_error("{\"format\": ").find("m.json: not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error("{}").find("not a ZeroShard checkpoint manifest"), std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"version\": 1", "\"version\": 2")).find("format version 2 is unknown"),
            std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"step\": 42", "\"stepp\": 42")).find("the manifest has no 'step'"),
            std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"stage\": 3", "\"stage\": \"3\"")).find("stage has the wrong type (string)"),
            std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"stage\": 3", "\"stage\": 7")).find("out of range"), std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"dtype\":\"bf16\"", "\"dtype\":\"int8\"")).find("dtype 'int8'"),
            std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "deadbeefcafef00d", "xyz")).find("not 16 hex digits"), std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "rank-00001.safetensors", "../../etc/passwd")).find("plain file name"),
            std::string::npos);
  // Pieces must continue each other and cover the tensor; files must exist.
  EXPECT_NE(parse_error(replaced(good, "[1,8,7]", "[1,9,6]")).find("does not continue the tensor at element 8"),
            std::string::npos)
      << good;
  EXPECT_NE(parse_error(replaced(good, "[1,8,7]", "[1,8,6]")).find("cover 14 of 15 elements"), std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "[[1,0,4]]", "[[5,0,4]]")).find("file #5 of 2"), std::string::npos);
  EXPECT_NE(parse_error(replaced(good, "\"h.0.mask\"", "\"h.0.w\"")).find("'h.0.w' appears twice"), std::string::npos);
}

// For random tensors, world sizes and writer counts (equal: sharded stages; different: stage 0's even split),
// every tensor's pieces cover it exactly once, each within one writer's range.
TEST(CheckpointPieces, CoverEveryTensorExactly) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<TensorSpec> specs;
    const int count = 1 + static_cast<int>(rng() % 5);
    for (int i = 0; i < count; ++i)
      specs.push_back({"t" + std::to_string(i), Shape({1 + static_cast<int64_t>(rng() % 300)})});
    const int writers = 1 + static_cast<int>(rng() % 5);
    const bool sharded = rng() % 2 == 0;
    const FlatLayout l = make_flat_layout(specs, sharded ? writers : 1);
    for (const auto& slot : l.slots) {
      std::vector<Piece> pieces;
      add_pieces(l, slot, writers, pieces);
      int64_t next = 0;
      for (const auto& p : pieces) {
        ASSERT_EQ(p.first, next);
        const auto [lo, hi] = owned_range(l, p.file, writers);
        ASSERT_GE(slot.offset + p.first, lo);
        ASSERT_LE(slot.offset + p.first + p.count, hi);
        next += p.count;
      }
      ASSERT_EQ(next, slot.numel) << "trial " << trial;
    }
  }
}

TEST(DurableFiles, DigestsMatchAndAFullDiskIsReported) {
  const fs::path dir = fs::temp_directory_path() / ("zs_fileio_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string text(100000, 'x');
  FileWriter w((dir / "a").string());
  w.write(text.data(), 1234);
  w.write(text.data(), text.size() - 1234);
  const FileDigest d = w.finish();
  EXPECT_EQ(d, digest_file((dir / "a").string()));
  EXPECT_EQ(d.bytes, text.size());
  write_file_atomic((dir / "b").string(), "new");
  EXPECT_EQ(digest_file((dir / "b").string()).bytes, 3u);
  EXPECT_FALSE(fs::exists(dir / "b.tmp"));
  // A file-size limit stands in for a full disk.
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 1000;
  setrlimit(RLIMIT_FSIZE, &small);
  std::string msg;
  try {
    FileWriter big((dir / "c").string());
    big.write(text.data(), text.size());
  } catch (const Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_DFL);
  EXPECT_NE(msg.find((dir / "c").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("disk is full or a file-size limit"), std::string::npos) << msg;
  // A writer that is finished short of its header's promise says so.
  SafetensorsWriter sw((dir / "d").string(), {{"x", DType::f32, {4}, 0, 0}});
  sw.write(text.data(), 8);
  try {
    sw.finish();
    ADD_FAILURE() << "a short safetensors file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("header declares"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace zs::ckpt
