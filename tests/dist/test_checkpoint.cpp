// Checkpoints through the engine, at world 4 with sub-groups of 1-3 ranks: exact resume, loading at another
// world size and stage, and every kind of bad checkpoint failing clearly on every rank.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "runtime/safetensors.h"
#include "runtime/weight_files.h"
#include "tests/dist/dist_main.h"
#include "tests/dist/engine_harness.h"
#include "tests/run_command.h"

namespace zs {
namespace {

namespace fs = std::filesystem;
using namespace test;

constexpr int kHalf = 100;  // resume tests: 2 x 100 steps

// This job's directory (removed when the tests end).
fs::path job_dir() {
  return test::job_dir("zs_ckpt_");
}

struct RemoveJobDir : ::testing::Environment {
  void TearDown() override {
    pg().world->barrier().wait();
    if (pg().world->rank() == 0) fs::remove_all(job_dir());
  }
};
[[maybe_unused]] const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new RemoveJobDir);

// A fresh directory under job_dir().
fs::path shared_dir(const std::string& name) {
  const fs::path d = job_dir() / name;
  if (pg().world->rank() == 0) {
    fs::remove_all(d);
    fs::create_directories(d);
  }
  pg().world->barrier().wait();
  return d;
}

// The first `size` ranks of the world as their own group (nullptr on the others). Collective over the world.
Comm* group(int size) {
  static std::map<int, std::unique_ptr<Comm>> groups;
  if (size == pg().world->size()) return pg().world.get();
  if (!groups.count(size)) {
    const int r = pg().world->rank();
    groups[size] = pg().world->split(r < size ? 0 : -1, r);
  }
  return groups[size].get();
}

std::vector<std::vector<std::vector<double>>> read_all(Engine& e) {
  std::vector<std::vector<std::vector<double>>> out;
  for (int u = 0; u < e.num_units(); ++u) {
    out.emplace_back();
    for (const auto& t : e.unit(u).tensors) {
      auto v = e.read_param(u, t.name);
      out.back().emplace_back(v.begin(), v.end());
    }
  }
  return out;
}

void declare(Engine& e) {
  for (auto& [name, tensors] : model_units()) e.add_unit(name, tensors);
}

// The largest per-tensor relative L2 error ||a - b|| / ||b||.
double worst_l2_error(const std::vector<std::vector<std::vector<double>>>& a,
                      const std::vector<std::vector<std::vector<double>>>& b) {
  double worst = 0;
  for (std::size_t u = 0; u < b.size(); ++u)
    for (std::size_t t = 0; t < b[u].size(); ++t) {
      double d = 0, n = 0;
      for (std::size_t e = 0; e < b[u][t].size(); ++e) {
        d += (a[u][t][e] - b[u][t][e]) * (a[u][t][e] - b[u][t][e]);
        n += b[u][t][e] * b[u][t][e];
      }
      worst = std::max(worst, std::sqrt(d / n));
    }
  return worst;
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- exact resume ---------------------------------------------------------------------------------------

class SameWorldResume : public ::testing::TestWithParam<Case> {};

TEST_P(SameWorldResume, IsBitIdenticalToTrainingStraightThrough) {
  const Case c = GetParam();
  const fs::path dir = shared_dir("resume");
  Engine straight(make_config(c), *pg().world);
  const Trajectory want = train(c, straight, 2 * kHalf);
  {
    Engine first(make_config(c), *pg().world);
    train(c, first, kHalf);
    first.save_checkpoint(dir.string(), "data position 100");
  }
  Engine resumed(make_config(c), *pg().world);
  declare(resumed);
  EXPECT_EQ(resumed.load_checkpoint(dir.string()), "data position 100");
  EXPECT_EQ(resumed.steps_done(), kHalf);
  const Trajectory got = train(c, resumed, kHalf);
  EXPECT_EQ(got.params, want.params) << name(c, pg().world->size());
  EXPECT_EQ(got.losses, std::vector<double>(want.losses.begin() + kHalf, want.losses.end()));
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, SameWorldResume,
                         ::testing::Values(Case{3, DType::f32, 2, 1, 1.0f}, Case{1, DType::bf16, 0, 3, 0.5f},
                                           Case{2, DType::f32, 0, 1, 0.0f, kernels::Optimizer::sgd},
                                           Case{3, DType::f32, 2, 1, 1.0f, kernels::Optimizer::adamw, false, 2},
                                           // bf16 optimizer states, offloaded: saved as BF16 entries
                                           Case{2, DType::f32, 2, 1, 0.5f, kernels::Optimizer::adamw, false, 1, false,
                                                true}));

// The states' dtype is not part of a checkpoint either: f32 states resume as bf16 (rounded once) and train
// on close to the f32 run (states read as the wrong width would be far off), and bf16 states resume as f32.
TEST(CheckpointStates, ResumeAcrossStateDtypes) {
  const fs::path dir = shared_dir("states");
  Case f32_states{3, DType::f32, 2, 1, 0.0f}, bf16_states = f32_states;
  bf16_states.bf16_states = true;
  auto resume_and_train = [&](const Case& c) {
    Engine e(make_config(c), *pg().world);
    declare(e);
    e.load_checkpoint(dir.string());
    return train(c, e, 10);
  };
  {
    Engine first(make_config(f32_states), *pg().world);
    train(f32_states, first, 20);
    first.save_checkpoint(dir.string());
  }
  const Trajectory f = resume_and_train(f32_states), b = resume_and_train(bf16_states);
  const double gap = worst_rms_error(b.params, f.params);
  EXPECT_GT(gap, 0.0);
  EXPECT_LT(gap, 2e-3) << "f32 states loaded into bf16 ones";
  {
    Engine bf(make_config(bf16_states), *pg().world);
    declare(bf);
    bf.load_checkpoint(dir.string());
    train(bf16_states, bf, 5);
    bf.save_checkpoint(dir.string());
  }
  const Trajectory f2 = resume_and_train(f32_states), b2 = resume_and_train(bf16_states);  // BF16 entries
  EXPECT_LT(worst_rms_error(f2.params, b2.params), 2e-3) << "bf16 states loaded into f32 ones";
  EXPECT_GT(worst_rms_error(f2.params, f.params), 1e-3) << "the second checkpoint was not the one loaded";
}

// Where the optimizer ran is not part of a checkpoint: one saved with the optimizer and parameters
// offloaded resumes on the device optimizer (and back, and then into a partial offload, offload.ratio
// 0.5), bit-identical to training straight through; the same with the optimizer's state on disk
// (offload.optimizer: nvme), which a save reads from its file and a load writes to it, and with the
// parameters and the gradient shards on disk too (offload.params and grads: nvme; a load writes the first).
TEST(OffloadedCheckpoint, ResumesOnTheDeviceAndBack) {
  Case device{3, DType::f32, 2, 1, 1.0f}, offloaded = device, part = device;
  offloaded.offload = 2;
  part.offload = 1;
  Config part_cfg = make_config(part);
  part_cfg.offload.ratio = 0.5;
  for (const Config& off_cfg : {make_config(offloaded), on_nvme(make_config(offloaded), 3),
                                grads_on_nvme(params_on_nvme(on_nvme(make_config(offloaded), 3), 3))}) {
    const std::string what = fmt::format("offload.optimizer: {}, params: {}, grads: {}", off_cfg.offload.optimizer,
                                         off_cfg.offload.params, off_cfg.offload.grads);
    const fs::path dir = shared_dir("offload");
    Engine straight(make_config(device), *pg().world);
    constexpr int kFirst = 30, kSecond = 10, kThird = 10, kFourth = 10;
    const Trajectory want = train(device, straight, kFirst + kSecond + kThird);
    {
      Engine first(off_cfg, *pg().world);
      train(offloaded, first, kFirst);
      first.save_checkpoint(dir.string());
    }
    {
      Engine second(make_config(device), *pg().world);
      declare(second);
      second.load_checkpoint(dir.string());
      train(device, second, kSecond);
      second.save_checkpoint(dir.string());
    }
    Engine third(off_cfg, *pg().world);
    declare(third);
    third.load_checkpoint(dir.string());
    const Trajectory got = train(offloaded, third, kThird);
    EXPECT_EQ(got.params, want.params) << what;
    EXPECT_EQ(got.losses, std::vector<double>(want.losses.end() - kThird, want.losses.end())) << what;
    third.save_checkpoint(dir.string());
    const Trajectory want4 = train(device, straight, kFourth);
    Engine fourth(part_cfg, *pg().world);
    declare(fourth);
    fourth.load_checkpoint(dir.string());
    const Trajectory got4 = train(part, fourth, kFourth);
    EXPECT_EQ(got4.params, want4.params) << what << ", resumed with offload.ratio 0.5";
    pg().world->barrier().wait();  // every rank has loaded before the next round's shared_dir removes it
  }
}

// N ranks save, M ranks load (different padding, different shards): the loaded parameters are exactly the
// saved ones, and training on goes where training at M all along goes. Across worlds the f32 gradient
// sums run in a different order for the first half, so the bound is relative (per tensor, L2): 1e-6.
struct Move {
  int from_world, from_stage, to_world, to_stage;
};

class CrossWorldResume : public ::testing::TestWithParam<Move> {};

TEST_P(CrossWorldResume, LoadsExactlyAndTrainsOn) {
  const Move mv = GetParam();
  if (pg().world->size() < std::max(mv.from_world, mv.to_world)) GTEST_SKIP() << "needs more ranks";
  const fs::path dir = shared_dir("cross");
  const Case from{mv.from_stage, DType::f32, 0, 1, 1.0f}, to{mv.to_stage, DType::f32, 0, 1, 1.0f};
  Comm* g_from = group(mv.from_world);
  Comm* g_to = group(mv.to_world);
  std::vector<std::vector<std::vector<double>>> saved;
  if (g_from) {
    Engine e(make_config(from), *g_from);
    train(from, e, kHalf);
    e.save_checkpoint(dir.string());
    saved = read_all(e);
  }
  pg().world->barrier().wait();
  if (!g_to) return;
  Engine e(make_config(to), *g_to);
  declare(e);
  e.load_checkpoint(dir.string());
  const auto loaded = read_all(e);
  if (g_from) {
    EXPECT_EQ(loaded, saved) << "the loaded parameters differ from the saved ones";
  }
  const Trajectory got = train(to, e, kHalf);
  Engine straight(make_config(to), *g_to);
  const Trajectory want = train(to, straight, 2 * kHalf);
  const double worst = worst_l2_error(got.params, want.params);
  EXPECT_LE(worst, 1e-6);
  if (g_to->rank() == 0)
    std::printf("world %d stage %d -> world %d stage %d: relative L2 error %.3g after %d + %d steps\n", mv.from_world,
                mv.from_stage, mv.to_world, mv.to_stage, worst, kHalf, kHalf);
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, CrossWorldResume,
                         ::testing::Values(Move{2, 3, 3, 3}, Move{4, 3, 1, 3}, Move{3, 1, 2, 0}), [](const auto& info) {
                           const Move& m = info.param;
                           return fmt::format("world{}stage{}_to_world{}stage{}", m.from_world, m.from_stage,
                                              m.to_world, m.to_stage);
                         });

// ---- bad checkpoints ---------------------------------------------------------------------------------------

class BadCheckpoint : public ::testing::Test {
 protected:
  const Case c{3, DType::f32, 0, 1, 0.0f};
  fs::path root;
  fs::path step_dir;

  void SetUp() override {
    root = shared_dir("bad");
    Engine e(make_config(c), *pg().world);
    train(c, e, 3);
    e.save_checkpoint(root.string());
    step_dir = root / ckpt::step_dir_name(3);
    pg().world->barrier().wait();
  }
  // Rank 0 changes the checkpoint (the others wait), then every rank tries to load it.
  template <typename F>
  std::string load_after(F&& damage, const Config* cfg = nullptr) {
    if (pg().world->rank() == 0) damage();
    pg().world->barrier().wait();
    Engine e(cfg ? *cfg : make_config(c), *pg().world);
    declare(e);
    return error_of([&] { e.load_checkpoint(root.string()); });
  }
  fs::path file(int rank) const { return step_dir / ckpt::rank_file_name(rank); }
  int victim() const { return pg().world->size() - 1; }
  // The error f throws while the victim may write only 4 KiB per file (a file-size limit standing in for a
  // full disk), or "".
  template <typename F>
  std::string with_a_full_disk_on_the_victim(F&& f) {
    rlimit old{};
    getrlimit(RLIMIT_FSIZE, &old);
    const bool limited = pg().world->rank() == victim();
    if (limited) {
      signal(SIGXFSZ, SIG_IGN);
      rlimit small = old;
      small.rlim_cur = 4096;
      setrlimit(RLIMIT_FSIZE, &small);
    }
    const std::string m = error_of(f);
    if (limited) {
      setrlimit(RLIMIT_FSIZE, &old);
      signal(SIGXFSZ, SIG_DFL);
    }
    return m;
  }
  // Only the last rank reads the damaged file; every rank's error names that rank, the file and the fault.
  void expect_named(const std::string& msg, const std::string& what) {
    EXPECT_TRUE(has(msg, fmt::format("failed on rank {}", victim()))) << msg;
    EXPECT_TRUE(has(msg, file(victim()).string())) << msg;
    EXPECT_TRUE(has(msg, what)) << msg;
  }
};

TEST_F(BadCheckpoint, TruncatedFile) {
  const std::string m = load_after([&] { fs::resize_file(file(victim()), fs::file_size(file(victim())) - 100); });
  expect_named(m, "truncated");
  EXPECT_TRUE(has(m, fmt::format("'{}' holds no earlier checkpoint to load instead", root.string()))) << m;
}

// With an older checkpoint beside the damaged one, the error names it and how to resume from it, and that
// advice works.
TEST_F(BadCheckpoint, TheErrorNamesTheNewestEarlierCheckpoint) {
  {
    Engine e(make_config(c), *pg().world);
    declare(e);
    e.load_checkpoint(root.string());
    train(c, e, 2);
    e.save_checkpoint(root.string());  // step 5, beside step 3
  }
  const fs::path damaged = root / ckpt::step_dir_name(5) / ckpt::rank_file_name(victim());
  const std::string m = load_after([&] { fs::remove(damaged); });
  EXPECT_TRUE(has(m, damaged.string() + "' is missing")) << m;
  EXPECT_TRUE(has(m, fmt::format("'{}' is the newest before it (write '{}' into '{}'", step_dir.string(),
                                 ckpt::step_dir_name(3), (root / "latest").string())))
      << m;
  if (pg().world->rank() == 0) std::ofstream(root / "latest") << ckpt::step_dir_name(3) << "\n";
  pg().world->barrier().wait();
  Engine e(make_config(c), *pg().world);
  declare(e);
  e.load_checkpoint(root.string());
  EXPECT_EQ(e.steps_done(), 3);
}

TEST_F(BadCheckpoint, OneFlippedByte) {
  const std::string m = load_after([&] {
    std::fstream f(file(victim()), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-7, std::ios::end);
    const char b = static_cast<char>(f.get());
    f.seekp(-7, std::ios::end);
    f.put(static_cast<char>(b ^ 0x10));
  });
  expect_named(m, "corrupt");
}

TEST_F(BadCheckpoint, MissingFile) {
  const std::string m = load_after([&] { fs::remove(file(victim())); });
  expect_named(m, "missing");
}

TEST_F(BadCheckpoint, DifferentModelListsTheTensors) {
  Engine e(make_config(c), *pg().world);
  auto units = model_units();
  units[1].second[0].shape = Shape({53, 38});  // a reshaped weight
  units[2].second.pop_back();                  // a missing tensor
  for (auto& [name, tensors] : units) e.add_unit(name, tensors);
  e.add_unit("extra", {{"w", Shape({4})}});
  const std::string m = error_of([&] { e.load_checkpoint(root.string()); });
  EXPECT_TRUE(has(m, "does not fit this model")) << m;
  EXPECT_TRUE(has(m, "block1.w: shape [")) << m;
  EXPECT_TRUE(has(m, "extra.w [4]: in the model, not in the checkpoint")) << m;
  EXPECT_TRUE(has(m, "in the checkpoint, not in the model")) << m;
}

TEST_F(BadCheckpoint, UnknownFormatVersion) {
  const std::string m = load_after([&] {
    const fs::path p = step_dir / "manifest.json";
    std::ifstream in(p);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto at = text.find("\"version\": 1");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 12, "\"version\": 99");
    std::ofstream(p) << text;
  });
  EXPECT_TRUE(has(m, "format version 99")) << m;
  EXPECT_TRUE(has(m, "manifest.json")) << m;
}

TEST_F(BadCheckpoint, DirectoryThatDoesNotExist) {
  Engine e(make_config(c), *pg().world);
  declare(e);
  const std::string m = error_of([&] { e.load_checkpoint((root / "nowhere").string()); });
  EXPECT_TRUE(has(m, "does not exist")) << m;
  EXPECT_TRUE(has(m, (root / "nowhere").string())) << m;
}

TEST_F(BadCheckpoint, OtherOptimizer) {
  Config sgd = make_config(c);
  sgd.optimizer.type = kernels::Optimizer::sgd;
  const std::string m = load_after([] {}, &sgd);
  EXPECT_TRUE(has(m, "adamw optimizer state")) << m;
  EXPECT_TRUE(has(m, "optimizer.type: adamw")) << m;
}

// The last rank may write only a few bytes (a file-size limit stands in for a full disk): the save fails
// on every rank naming it, and the previous checkpoint is still the one that loads.
TEST_F(BadCheckpoint, DiskFullDuringSaveKeepsThePreviousCheckpoint) {
  Engine e(make_config(c), *pg().world);
  declare(e);
  e.load_checkpoint(root.string());
  train(c, e, 2);
  const std::string m = with_a_full_disk_on_the_victim([&] { e.save_checkpoint(root.string()); });
  EXPECT_TRUE(has(m, "disk is full or a file-size limit")) << m;
  EXPECT_TRUE(has(m, fmt::format("writing failed on rank {}", victim()))) << m;
  EXPECT_TRUE(has(m, "previous checkpoint is unchanged")) << m;
  pg().world->barrier().wait();
  EXPECT_FALSE(fs::exists(root / (ckpt::step_dir_name(5) + ".tmp")));
  EXPECT_EQ(ckpt::find_latest(root.string()), step_dir.string());
  Engine again(make_config(c), *pg().world);
  declare(again);
  again.load_checkpoint(root.string());
  EXPECT_EQ(again.steps_done(), 3);
}

// The same with checkpoint.async: save_checkpoint returns at once and the failure comes from
// wait_checkpoint, on every rank, naming the rank and the fault; the previous checkpoint stays the latest.
TEST_F(BadCheckpoint, DiskFullDuringAnAsyncSaveKeepsThePreviousCheckpoint) {
  Config cfg = make_config(c);
  cfg.checkpoint.async = true;
  Engine e(cfg, *pg().world);
  declare(e);
  e.load_checkpoint(root.string());
  train(c, e, 2);
  const std::string m = with_a_full_disk_on_the_victim([&] {
    e.save_checkpoint(root.string());
    e.wait_checkpoint();
  });
  EXPECT_TRUE(has(m, fmt::format("rank {}: save_checkpoint('{}') of step 5 failed", pg().world->rank(), root.string())))
      << m;
  EXPECT_TRUE(has(m, fmt::format("): rank {}: ", victim()))) << m;
  EXPECT_TRUE(has(m, "disk is full or a file-size limit")) << m;
  EXPECT_TRUE(has(m, "the previous checkpoint stays the latest")) << m;
  EXPECT_NO_THROW(e.wait_checkpoint());  // reported once
  pg().world->barrier().wait();
  EXPECT_FALSE(fs::exists(root / (ckpt::step_dir_name(5) + ".tmp")));
  EXPECT_EQ(ckpt::find_latest(root.string()), step_dir.string());
  train(c, e, 1);  // the engine trains on, and the next save works
  e.save_checkpoint(root.string());
  e.wait_checkpoint();
  pg().world->barrier().wait();
  EXPECT_EQ(ckpt::find_latest(root.string()), (root / ckpt::step_dir_name(6)).string());
}

// ---- checkpoint.async --------------------------------------------------------------------------------------

// A save that finishes in the background writes the very bytes a synchronous save writes, though training
// goes on (and changes every state it copied) while it is written.
TEST(AsyncCheckpoint, WritesTheSameBytesAsASynchronousSave) {
  struct Run {
    Case c;
    bool nvme = false;  // the async save's engine keeps its optimizer state on disk (the synchronous one in memory)
  };
  for (const auto& [c, nvme] : {Run{Case{3, DType::f32, 2, 1, 1.0f}}, Run{Case{1, DType::bf16, 0, 3, 0.5f}},
                                Run{Case{0, DType::f32, 0, 1, 0.0f, kernels::Optimizer::sgd}},
                                Run{Case{2, DType::f32, 2, 1, 0.5f, kernels::Optimizer::adamw, false, 1, false, true}},
                                Run{Case{3, DType::bf16, 2, 1, 1.0f, kernels::Optimizer::adamw, false, 2}, true}}) {
    const fs::path sync_root = shared_dir("sync"), async_root = shared_dir("async");
    {
      Engine e(make_config(c), *pg().world);
      train(c, e, 20);
      e.save_checkpoint(sync_root.string(), "at 20");
    }
    Config cfg = nvme ? on_nvme(make_config(c)) : make_config(c);
    cfg.checkpoint.async = true;
    Engine e(cfg, *pg().world);
    train(c, e, 20);
    e.save_checkpoint(async_root.string(), "at 20");
    train(c, e, 3);
    e.wait_checkpoint();
    pg().world->barrier().wait();
    const fs::path a = sync_root / ckpt::step_dir_name(20), b = async_root / ckpt::step_dir_name(20);
    std::vector<std::string> names;
    for (const auto& f : fs::directory_iterator(a)) names.push_back(f.path().filename().string());
    EXPECT_EQ(names.size(), static_cast<std::size_t>(pg().world->size()) + 1) << name(c, pg().world->size());
    auto bytes = [](const fs::path& p) {
      std::ifstream f(p, std::ios::binary);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    for (const std::string& n : names)
      EXPECT_TRUE(bytes(a / n) == bytes(b / n)) << n << " differs, " << name(c, pg().world->size());
    EXPECT_EQ(ckpt::find_latest(async_root.string()), b.string());
    pg().world->barrier().wait();  // every rank has read them before the next case's shared_dir removes them
  }
}

// An engine on a sub-group before one on the world, so the ranks have different histories: each group's
// saves meet under their own keys in the store, and the world's save commits with every rank's file.
TEST(AsyncCheckpoint, EnginesOnSubGroupsKeepTheirSavesApart) {
  const Case c{3, DType::f32, 0, 1, 0.0f};
  Config cfg = make_config(c);
  cfg.checkpoint.async = true;
  const fs::path root = shared_dir("subgroups");
  if (Comm* pair = group(2)) {
    Engine e(cfg, *pair);
    train(c, e, 2);
    e.save_checkpoint((root / "pair").string());
    e.wait_checkpoint();
  }
  Engine e(cfg, *pg().world);
  train(c, e, 3);
  e.save_checkpoint((root / "world").string());
  e.wait_checkpoint();
  pg().world->barrier().wait();
  ckpt::Reader r((root / "world").string());
  EXPECT_EQ(r.manifest().step, 3);
  EXPECT_EQ(r.manifest().world_size, pg().world->size());
  for (int f = 0; f < static_cast<int>(r.manifest().files.size()); ++f) r.verify(f);
  EXPECT_EQ(ckpt::Reader((root / "pair").string()).manifest().world_size, 2);
  pg().world->barrier().wait();
}

// ---- housekeeping ------------------------------------------------------------------------------------------

TEST(CheckpointRotation, KeepsTheNewestAndSavesPeriodically) {
  for (bool async : {false, true}) {
    const fs::path root = shared_dir("rotate");
    Config cfg = make_config({2, DType::f32, 0, 1, 0.0f});
    cfg.checkpoint.dir = root.string();
    cfg.checkpoint.every_steps = 2;
    cfg.checkpoint.keep = 2;
    cfg.checkpoint.async = async;
    Engine e(cfg, *pg().world);
    int calls = 0;
    e.set_user_state([&] { return fmt::format("call {}", ++calls); });
    train({2, DType::f32, 0, 1, 0.0f}, e, 7);
    e.wait_checkpoint();
    pg().world->barrier().wait();
    std::vector<std::string> dirs;
    for (const auto& d : fs::directory_iterator(root)) dirs.push_back(d.path().filename().string());
    std::sort(dirs.begin(), dirs.end());
    EXPECT_EQ(dirs, (std::vector<std::string>{"latest", ckpt::step_dir_name(4), ckpt::step_dir_name(6)}));
    ckpt::Reader r(root.string());
    EXPECT_EQ(r.manifest().step, 6);
    EXPECT_EQ(r.manifest().user_state, "call 3");
    EXPECT_EQ(r.manifest().world_size, pg().world->size());
    for (int f = 0; f < static_cast<int>(r.manifest().files.size()); ++f) r.verify(f);
    pg().world->barrier().wait();  // every rank has read it before the next round's shared_dir removes it
  }
}

// With checkpoint.every_steps, a checkpoint.dir that cannot be written fails init_params on every rank, before
// the first step, instead of failing the first save after the steps before it.
TEST(CheckpointRotation, AnUnwritableDirectoryFailsBeforeTraining) {
  const fs::path root = shared_dir("unwritable");
  if (pg().world->rank() == 0) std::ofstream(root / "a-file") << "not a directory";
  pg().world->barrier().wait();
  Config cfg = make_config({2, DType::f32, 0, 1, 0.0f});
  cfg.checkpoint.dir = (root / "a-file" / "ckpt").string();
  cfg.checkpoint.every_steps = 100;
  Engine e(cfg, *pg().world);
  declare(e);
  const std::string m = error_of([&] { e.init_params(kInit); });
  EXPECT_TRUE(has(m, fmt::format("checkpoint.dir '{}' can be written", cfg.checkpoint.dir))) << m;
  EXPECT_TRUE(has(m, "failed on rank")) << m;
  EXPECT_TRUE(has(m, "fix checkpoint.dir or its permissions")) << m;
}

}  // namespace
}  // namespace zs

namespace zs {
namespace {

// save_weights split at a file size writes Hugging Face's sharded layout (model-0000k-of-0000N.safetensors,
// each holding at most the limit's bytes of data unless one tensor is larger, and the index), as does
// zsckpt export --max-file-size from a checkpoint; each reads back as one set with every parameter exact,
// and load_weights takes either (the directory or the index) at every stage: each rank reads its shards
// from whichever files hold them.
TEST(CheckpointTools, ShardedWeightsRoundTripAtEveryStage) {
  const fs::path root = shared_dir("sharded_weights");
  const Case c{3, DType::f32, 0, 1, 0.0f};
  Engine e(make_config(c), *pg().world);
  train(c, e, 3);
  const auto params = read_all(e);
  constexpr int64_t kLimit = 6000;  // bytes of data per file: the test model's tensors are 44 B to 11.2 KB
  const fs::path weights = root / "weights", exported = root / "exported";
  e.save_weights(weights.string(), DType::f32, kLimit);
  e.save_checkpoint((root / "ckpt").string());
  if (pg().world->rank() == 0) {  // zsckpt export writes the same layout from the checkpoint's files
    const std::string tool = ZS_ZSCKPT_PATH;
    const test::CommandResult x = run_command(tool + " export " + (root / "ckpt").string() + " --out " +
                                              exported.string() + " --max-file-size " + std::to_string(kLimit));
    EXPECT_EQ(x.rc, 0) << x.output;
    EXPECT_NE(x.output.find("(sharded, with its index)"), std::string::npos) << x.output;
    const test::CommandResult bad = run_command(tool + " export " + (root / "ckpt").string() + " --out " +
                                                exported.string() + " --max-file-size 5x");
    EXPECT_NE(bad.rc, 0);
    EXPECT_NE(bad.output.find("'5x' is not a size"), std::string::npos) << bad.output;
  }
  pg().world->barrier().wait();
  for (const fs::path& dir : {weights, exported}) {
    WeightFiles w(dir.string());
    int files = 0;
    for (const auto& f : fs::directory_iterator(dir)) {
      if (f.path().extension() != ".safetensors") continue;
      ++files;
      SafetensorsFile sf(f.path().string());
      uint64_t data = 0;
      for (const auto& t : sf.tensors()) data += t.end - t.begin;
      EXPECT_TRUE(data <= static_cast<uint64_t>(kLimit) || sf.tensors().size() == 1) << f.path() << ": " << data;
    }
    EXPECT_GT(files, 2);
    EXPECT_NE(w.description().find(fmt::format("and its {} files", files)), std::string::npos) << w.description();
    const auto units = model_units();
    for (std::size_t u = 0; u < units.size(); ++u)
      for (std::size_t t = 0; t < units[u].second.size(); ++t) {
        const std::string name = units[u].first + "." + units[u].second[t].name;
        std::vector<float> got(params[u][t].size());
        w.read_f32(name, 0, static_cast<int64_t>(got.size()), got.data());
        for (std::size_t k = 0; k < got.size(); ++k)
          ASSERT_EQ(got[k], static_cast<float>(params[u][t][k])) << dir << ": " << name << "[" << k << "]";
      }
  }
  for (int stage = 0; stage <= 3; ++stage) {
    Engine loaded(make_config({stage, DType::f32, 1, 1, 0.0f}), *pg().world);
    declare(loaded);
    loaded.load_weights(stage % 2 ? (weights / kWeightsIndex).string() : exported.string());
    EXPECT_EQ(read_all(loaded), params) << "stage " << stage;
  }
}

// zsckpt on a real checkpoint: inspect, verify, export (f32 exact, bf16 rounded), the same for the engine's
// save_weights, and the export read back by Python's safetensors library when it is installed.
TEST(CheckpointTools, InspectVerifyAndExport) {
  const fs::path root = shared_dir("tools");
  const Case c{3, DType::f32, 0, 1, 0.0f};
  Engine e(make_config(c), *pg().world);
  train(c, e, 3);
  e.save_checkpoint(root.string(), "epoch 0");
  const auto params = read_all(e);
  e.save_weights((root / "weights_f32.safetensors").string());  // the engine's own export, for comparison
  e.save_weights((root / "weights_bf16.safetensors").string(), DType::bf16);
  if (pg().world->rank() != 0) return;
  const std::string tool = ZS_ZSCKPT_PATH;
  const test::CommandResult v = run_command(tool + " verify " + root.string());
  EXPECT_EQ(v.rc, 0) << v.output;
  EXPECT_TRUE(has(v.output, "OK: ")) << v.output;
  const test::CommandResult i = run_command(tool + " inspect " + root.string());
  EXPECT_EQ(i.rc, 0) << i.output;
  std::printf("%s", i.output.c_str());
  for (const char* want : {"step 3, saved by", "block1.w", "[53, 53]", "exp_avg_sq", "user state: epoch 0"})
    EXPECT_TRUE(has(i.output, want)) << want << " not in\n" << i.output;
  // zsckpt export (from the files) and Engine::save_weights (from the running engine) both give the
  // parameters exactly in f32, and rounded to nearest even in bf16.
  for (const std::string file : {"model_f32", "model_bf16", "weights_f32", "weights_bf16"}) {
    const std::string dt = file.substr(file.find('_') + 1);
    const fs::path out = root / (file + ".safetensors");
    if (file.starts_with("model")) {
      const test::CommandResult x =
          run_command(tool + " export " + root.string() + " --out " + out.string() + " --dtype " + dt);
      ASSERT_EQ(x.rc, 0) << x.output;
    }
    SafetensorsFile f(out.string());
    const auto units = model_units();
    for (std::size_t u = 0; u < units.size(); ++u)
      for (std::size_t t = 0; t < units[u].second.size(); ++t) {
        const auto& st = f.tensor(units[u].first + "." + units[u].second[t].name);
        std::vector<float> got(static_cast<std::size_t>(st.numel()));
        f.read_f32(st, 0, st.numel(), got.data());
        for (std::size_t k = 0; k < got.size(); ++k) {
          const float want = static_cast<float>(params[u][t][k]);
          ASSERT_EQ(got[k], dt == "f32" ? want : bf16_bits_to_f32(f32_to_bf16_bits(want)))
              << file << ": " << st.name << "[" << k << "]";
        }
      }
  }
  const test::CommandResult py = run_command("python3 -c 'import safetensors' 2>/dev/null");
  if (py.rc != 0) {
    std::printf("python3 with safetensors is not installed: the cross-library check is skipped\n");
    return;
  }
  const test::CommandResult load =
      run_command("python3 -c 'import numpy as np; from safetensors.numpy import load_file; d = load_file(\"" +
                  (root / "model_f32.safetensors").string() +
                  "\"); print(\" \".join(f\"{k}:{list(v.shape)}:{float(v.astype(np.float64).sum()):.9e}\" for k, v in "
                  "sorted(d.items())))'");
  ASSERT_EQ(load.rc, 0) << load.output;
  double sum = 0;
  for (double x : params[1][0]) sum += static_cast<float>(x);
  const std::string key = "block1.w:[53, 53]:";
  const auto at = load.output.find(key);
  ASSERT_NE(at, std::string::npos) << load.output;
  EXPECT_NEAR(std::stod(load.output.substr(at + key.size())), sum, 1e-9 * std::max(1.0, std::fabs(sum)) + 1e-12)
      << load.output;
  // A corrupted file makes verify fail with the file named.
  {
    std::fstream f(root / ckpt::step_dir_name(3) / ckpt::rank_file_name(0),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x55');
  }
  const test::CommandResult bad = run_command(tool + " verify " + root.string());
  EXPECT_EQ(bad.rc, 1) << bad.output;
  EXPECT_TRUE(has(bad.output, "rank-00000.safetensors' is corrupt")) << bad.output;
}

}  // namespace
}  // namespace zs
