// Pure arithmetic: per-rank chunks, launcher variables, job env parsing.
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "core/bootstrap.h"
#include "core/chunks.h"
#include "core/error.h"
#include "runtime/launcher.h"

namespace zs {
namespace {

TEST(Chunks, CoverEverythingOnce) {
  for (int64_t n : {0, 1, 7, 15, 17, 4096, 1000003})
    for (int parts = 1; parts <= 9; ++parts) {
      const int64_t first = chunks::chunk(n, parts, 0).count;
      int64_t off = 0;
      for (int i = 0; i < parts; ++i) {
        const chunks::Range c = chunks::chunk(n, parts, i);
        ASSERT_EQ(c.offset, off);
        ASSERT_LE(c.count, first);
        ASSERT_GE(c.count, first - 1);
        off += c.count;
      }
      ASSERT_EQ(off, n);
    }
}

JobEnv env_of(std::map<std::string, std::string> m) {
  return job_env_from([&](const char* k) -> const char* {
    auto it = m.find(k);
    return it == m.end() ? nullptr : it->second.c_str();
  });
}

TEST(JobEnv, TorchrunZsrunSlurmAndMpirunVariables) {
  JobEnv z = env_of({{"RANK", "3"},
                     {"WORLD_SIZE", "4"},
                     {"LOCAL_RANK", "1"},
                     {"LOCAL_WORLD_SIZE", "2"},
                     {"MASTER_ADDR", "10.0.0.1"},
                     {"MASTER_PORT", "29500"},
                     {"ZS_JOB_TOKEN", "t"},
                     {"ZS_LAUNCHER", "zsrun"},
                     {"ZS_RESTART_COUNT", "2"}});
  EXPECT_EQ(z.rank, 3);
  EXPECT_EQ(z.world_size, 4);
  EXPECT_EQ(z.local_rank, 1);
  EXPECT_EQ(z.local_world_size, 2);
  EXPECT_EQ(z.master_addr, "10.0.0.1");
  EXPECT_EQ(z.master_port, 29500);
  EXPECT_EQ(z.token, "t");
  EXPECT_TRUE(z.store_hosted);
  EXPECT_EQ(z.restart_count, 2);

  JobEnv s = env_of({{"SLURM_PROCID", "5"},
                     {"SLURM_NTASKS", "8"},
                     {"SLURM_LOCALID", "1"},
                     {"SLURM_NTASKS_PER_NODE", "4"},
                     {"SLURM_JOB_ID", "77"},
                     {"MASTER_PORT", "1234"}});
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.token, "slurm-77");
  EXPECT_FALSE(s.store_hosted);

  JobEnv m = env_of({{"OMPI_COMM_WORLD_RANK", "0"},
                     {"OMPI_COMM_WORLD_SIZE", "2"},
                     {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                     {"MASTER_PORT", "1"}});
  EXPECT_EQ(m.launcher, "mpirun");
  EXPECT_EQ(m.world_size, 2);

  JobEnv lone = env_of({});
  EXPECT_EQ(lone.world_size, 1);
  EXPECT_EQ(lone.launcher, "none");
}

TEST(JobEnv, BadVariablesAreNamed) {
  auto msg = [](std::map<std::string, std::string> m) {
    try {
      env_of(std::move(m));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK='x'"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}}).find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_PORT", "1"}}).find("outside"), std::string::npos);
  EXPECT_NE(msg({{"RANK", "0"}, {"WORLD_SIZE", "2"}}).find("MASTER_PORT"), std::string::npos);
}

TEST(Launcher, RankEnvFollowsTorchrunNames) {
  launcher::Options o;
  o.nproc_per_node = 4;
  o.nnodes = 2;
  o.node_rank = 1;
  o.master_addr = "h0";
  auto env = launcher::rank_env(o, 2, 29501, "tok", 1);
  std::map<std::string, std::string> m(env.begin(), env.end());
  EXPECT_EQ(m["RANK"], "6");
  EXPECT_EQ(m["LOCAL_RANK"], "2");
  EXPECT_EQ(m["WORLD_SIZE"], "8");
  EXPECT_EQ(m["LOCAL_WORLD_SIZE"], "4");
  EXPECT_EQ(m["MASTER_ADDR"], "h0");
  EXPECT_EQ(m["MASTER_PORT"], "29501");
  EXPECT_EQ(m["ZS_JOB_TOKEN"], "tok");
  EXPECT_EQ(m["ZS_RESTART_COUNT"], "1");
  EXPECT_EQ(m.count("ZS_CONFIG"), 0u);
  o.config = "/jobs/train.yaml";
  for (const auto& [k, v] : launcher::rank_env(o, 0, 29501, "tok", 0)) m[k] = v;
  EXPECT_EQ(m["ZS_CONFIG"], "/jobs/train.yaml");
}

TEST(Launcher, ValidateRejectsNonsense) {
  launcher::Options o;
  EXPECT_NE(launcher::validate(o), "");  // no command
  o.command = {"true"};
  EXPECT_EQ(launcher::validate(o), "");
  o.node_rank = 1;
  EXPECT_NE(launcher::validate(o).find("--node-rank"), std::string::npos);
  o.node_rank = 0;
  o.nnodes = 2;
  o.master_port = 0;
  EXPECT_NE(launcher::validate(o).find("--master-port 0"), std::string::npos);
  o.nnodes = 1;
  o.grace_s = -1;
  EXPECT_NE(launcher::validate(o).find("--grace -1 must be"), std::string::npos);
  o.grace_s = 5;
  o.nproc_per_node = 4;
  o.local_ranks_filter = {0, 3};
  EXPECT_EQ(launcher::validate(o), "");
  o.local_ranks_filter = {0, 4};
  EXPECT_EQ(launcher::validate(o), "--local-ranks-filter: local rank 4 is outside [0, 4) (--nproc-per-node 4)");
}

// --nproc-per-node as torchrun takes it.
TEST(Launcher, NprocPerNodeTakesANumberGpuCpuOrAuto) {
  EXPECT_EQ(launcher::nproc_from("3", 0, 16).count, 3);
  EXPECT_EQ(launcher::nproc_from("gpu", 8, 16).count, 8);
  EXPECT_EQ(launcher::nproc_from("cpu", 8, 16).count, 16);
  EXPECT_EQ(launcher::nproc_from("auto", 8, 16).count, 8);
  EXPECT_EQ(launcher::nproc_from("auto", 0, 16).count, 16);
  EXPECT_EQ(launcher::nproc_from("auto", 0, 16).error, "");
  const launcher::Nproc none = launcher::nproc_from("gpu", 0, 16);
  EXPECT_EQ(none.count, 0);
  EXPECT_NE(none.error.find("--nproc-per-node gpu: no CUDA GPU is visible"), std::string::npos) << none.error;
  for (const char* bad : {"0", "-2", "2x", "", "gpus"}) {
    const launcher::Nproc n = launcher::nproc_from(bad, 8, 16);
    EXPECT_EQ(n.count, 0) << bad;
    EXPECT_NE(n.error.find("is not a number >= 1, gpu, cpu or auto"), std::string::npos) << bad << ": " << n.error;
  }
}

}  // namespace
}  // namespace zs
