// Fault tests: run real zsrun jobs whose ranks fail, die, stall or never start; the job must end fast,
// name the culprit, and leave no process behind.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tests/run_command.h"

namespace {

namespace fs = std::filesystem;
using zs::test::CommandResult;
using zs::test::run_command;

std::string fmt_dir(const std::string& mode) {
  return "zs_fault_" + mode + "_" + std::to_string(getpid());
}

struct Result {
  int rc = -1;
  std::string output;
  double seconds = 0;
  std::vector<pid_t> pids;
};

Result run_job(const std::string& mode, int nproc, const std::string& extra_env = "",
               const std::string& zsrun_flags = "") {
  fs::path dir = fs::temp_directory_path() / fmt_dir(mode);
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string cmd = "ZS_TEST_PIDDIR=" + dir.string() + " " + extra_env + " " ZS_ZSRUN_PATH " --nproc-per-node " +
                    std::to_string(nproc) + " --master-port 0 --grace 2 " + zsrun_flags +
                    " -- " ZS_FAULT_PROG_PATH " " + mode;
  Result r;
  auto t0 = std::chrono::steady_clock::now();
  const CommandResult c = run_command(cmd);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.rc = c.rc;
  r.output = c.output;
  for (int i = 0; i < nproc; ++i) {
    std::ifstream f(dir / ("pid." + std::to_string(i)));
    pid_t pid = 0;
    if (f >> pid) r.pids.push_back(pid);
  }
  fs::remove_all(dir);
  return r;
}

// A port nothing listens on right now (the kernel's choice), for jobs that need a fixed one.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string file_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool alive(pid_t pid) {
  return kill(pid, 0) == 0 || errno != ESRCH;
}

void expect_all_gone(const Result& r, int nproc) {
  EXPECT_EQ(static_cast<int>(r.pids.size()), nproc) << r.output;
  for (pid_t p : r.pids) EXPECT_FALSE(alive(p)) << "rank process " << p << " outlived zsrun";
}

TEST(Faults, HealthyJobExitsZero) {
  Result r = run_job("ok", 3);
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("[rank2]: rank 2 of 3 (zsrun) done"), std::string::npos) << r.output;
  expect_all_gone(r, 3);
}

TEST(Faults, RankExitingThreeStopsTheJob) {
  Result r = run_job("exit3", 3);
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_LT(r.seconds, 10.0) << r.output;
  EXPECT_NE(r.output.find("zsrun: rank 1 (local rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("exited with status 3"), std::string::npos) << r.output;
  expect_all_gone(r, 3);
}

// torchrun's --log-dir and --local-ranks-filter: the console shows local rank 0 only, every rank's streams
// are in their files as written, and the failed rank's last stderr line, which the console did not show,
// comes just before the verdict.
TEST(Faults, WithALogDirAndAFilterTheReportStillShowsTheCause) {
  const fs::path logs = fs::temp_directory_path() / fmt_dir("logs");
  fs::remove_all(logs);
  Result r = run_job("exit3", 3, "", "--log-dir " + logs.string() + " --local-ranks-filter 0");
  EXPECT_NE(r.rc, 0) << r.output;
  const std::string err1 = (logs / "attempt-0/rank-1/stderr.log").string();
  EXPECT_NE(r.output.find("zsrun: the last line rank 1 wrote to stderr (all of it in " + err1 +
                          "):\n[rank1]: rank 1 exits with status 3 on purpose\nzsrun: rank 1 (local rank 1"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("[rank2]:"), std::string::npos) << r.output;
  EXPECT_EQ(file_text(err1), "rank 1 exits with status 3 on purpose\n");
  for (const char* rank : {"rank-0", "rank-2"})
    for (const char* stream : {"stdout.log", "stderr.log"})
      EXPECT_TRUE(fs::exists(logs / "attempt-0" / rank / stream)) << rank << stream;
  expect_all_gone(r, 3);
  fs::remove_all(logs);
}

TEST(Faults, RankKilledWhileOthersWaitInACollective) {
  Result r = run_job("sigkill", 4);
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_LT(r.seconds, 10.0) << r.output;
  EXPECT_NE(r.output.find("rank 1 (local rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("killed by signal 9 (KILL)"), std::string::npos) << r.output;
  expect_all_gone(r, 4);
}

// A rank killed just after a peer failed (as when the peer saw the connection break first): zsrun names the
// killed rank first, not only the exit it happened to reap first.
TEST(Faults, AKilledRankIsNamedFirstEvenWhenAPeerExitedBeforeIt) {
  Result r = run_job("collateral-first", 2);
  EXPECT_NE(r.rc, 0) << r.output;
  const std::size_t killed = r.output.find("zsrun: rank 1 (local rank 1"),
                    exited = r.output.find("rank 0 (local rank 0");
  ASSERT_NE(killed, std::string::npos) << r.output;
  EXPECT_NE(r.output.find("killed by signal 9 (KILL), and rank 0"), std::string::npos) << r.output;
  EXPECT_LT(killed, exited) << r.output;
  expect_all_gone(r, 2);
}

TEST(Faults, RankThatNeverStartsFailsRendezvousWithATimeout) {
  Result r = run_job("nostart", 3, "ZS_RENDEZVOUS_TIMEOUT_S=3");
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_LT(r.seconds, 20.0) << r.output;
  EXPECT_NE(r.output.find("rendezvous of group 'world'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("timed out after 3 s: rank 1 never joined"), std::string::npos) << r.output;
  expect_all_gone(r, 3);
}

TEST(Faults, StalledPeerTimesOutNamingOpSequenceAndPeer) {
  Result r = run_job("stall", 2, "ZS_COMM_TIMEOUT_S=2");
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_LT(r.seconds, 15.0) << r.output;
  // Rank 0 waits on rank 1 in all_reduce #3 (0-based sequence numbers) and reports it.
  EXPECT_NE(r.output.find("all_reduce #3 on group 'world'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("timed out after 2 s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  expect_all_gone(r, 2);
}

// srun/mpirun users: no zsrun, the library reads Slurm's or Open MPI's variables and rank 0 hosts the store.
TEST(Launchers, SlurmAndOpenMpiVariablesWithoutZsrun) {
  for (const std::string& vars :
       {std::string("SLURM_PROCID=$r SLURM_NTASKS=3 SLURM_LOCALID=$r SLURM_JOB_ID=7"),
        std::string("OMPI_COMM_WORLD_RANK=$r OMPI_COMM_WORLD_SIZE=3 OMPI_COMM_WORLD_LOCAL_RANK=$r")}) {
    const int port = free_port();  // a fresh one each time (the next port up may be taken)
    const std::string cmd = "bash -c 'for r in 0 1 2; do env -u RANK -u WORLD_SIZE " + vars +
                            " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " ZS_JOB_TOKEN=t " +
                            ZS_FAULT_PROG_PATH + " ok & done; wait'";
    const CommandResult r = run_command(cmd);
    for (int i = 0; i < 3; ++i)
      EXPECT_NE(r.output.find("rank " + std::to_string(i) + " of 3"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(vars.starts_with("SLURM") ? "(slurm)" : "(mpirun)"), std::string::npos) << r.output;
  }
}

TEST(Zsrun, BadFlagOrMissingProgramExitsTwoWithAMessage) {
  const CommandResult bad = run_command(ZS_ZSRUN_PATH " --no-such-flag -- true");
  EXPECT_EQ(bad.rc, 2) << bad.output;
  EXPECT_NE(bad.output.find("--no-such-flag"), std::string::npos) << bad.output;
  const CommandResult missing = run_command(ZS_ZSRUN_PATH " -- zs-no-such-program");
  EXPECT_EQ(missing.rc, 2) << missing.output;
  EXPECT_NE(missing.output.find("cannot run 'zs-no-such-program'"), std::string::npos) << missing.output;
  const CommandResult none = run_command(ZS_ZSRUN_PATH " --nproc-per-node 2");
  EXPECT_EQ(none.rc, 2) << none.output;
  const CommandResult help = run_command(ZS_ZSRUN_PATH " --help");
  EXPECT_EQ(help.rc, 0);
  for (const char* opt :
       {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--max-restarts", "--grace",
        "--standalone", "--log-dir", "--local-ranks-filter", "ZS_JOB_TOKEN"})
    EXPECT_NE(help.output.find(opt), std::string::npos) << opt;
  // --config is checked before any rank starts: one located error, exit 2.
  const fs::path yaml = fs::temp_directory_path() / fmt_dir("bad.yaml");
  std::ofstream(yaml) << "zero:\n  stage: 2\n  prefech: 1\n";
  const CommandResult config = run_command(ZS_ZSRUN_PATH " --config " + yaml.string() + " -- true");
  EXPECT_EQ(config.rc, 2) << config.output;
  EXPECT_NE(config.output.find(":3:3: unknown key 'prefech' in 'zero'; did you mean 'prefetch'?"), std::string::npos)
      << config.output;
  fs::remove(yaml);
  const CommandResult clash = run_command(ZS_ZSRUN_PATH " --standalone --master-port 5 -- true");
  EXPECT_EQ(clash.rc, 2) << clash.output;
  const CommandResult filter = run_command(ZS_ZSRUN_PATH " --nproc-per-node 2 --local-ranks-filter 0,2 -- true");
  EXPECT_EQ(filter.rc, 2) << filter.output;
  EXPECT_NE(filter.output.find("local rank 2 is outside [0, 2)"), std::string::npos) << filter.output;
  const CommandResult logs = run_command(ZS_ZSRUN_PATH " --log-dir /proc/zs-no-such-dir -- true");
  EXPECT_EQ(logs.rc, 2) << logs.output;
  EXPECT_NE(logs.output.find("--log-dir: cannot create '/proc/zs-no-such-dir/attempt-0/rank-0/stdout.log'"),
            std::string::npos)
      << logs.output;
  const CommandResult count = run_command(ZS_ZSRUN_PATH " --nproc-per-node gpus -- true");
  EXPECT_EQ(count.rc, 2) << count.output;
  EXPECT_NE(count.output.find("--nproc-per-node 'gpus' is not a number >= 1, gpu, cpu or auto"), std::string::npos)
      << count.output;
}

// torchrun's --standalone: one node, a free port (not the default 29500), so two jobs on a host do not collide.
TEST(Zsrun, StandalonePicksAFreePort) {
  const CommandResult r =
      run_command(ZS_ZSRUN_PATH " --standalone --nproc-per-node 2 -- sh -c 'echo port=$MASTER_PORT'");
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_NE(r.output.find("[rank1]: port="), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("port=29500"), std::string::npos) << r.output;
}

TEST(Zsrun, SigtermIsForwardedAndNothingSurvives) {
  fs::path dir = fs::temp_directory_path() / fmt_dir("sigterm");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string cmd = "ZS_TEST_PIDDIR=" + dir.string() +
                          " " ZS_ZSRUN_PATH " --nproc-per-node 3 --master-port 0 --grace 2 -- " ZS_FAULT_PROG_PATH
                          " forever";
  pid_t zsrun = fork();
  ASSERT_GE(zsrun, 0);
  if (zsrun == 0) {
    execl("/bin/sh", "sh", "-c", ("exec env " + cmd + " >/dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  // Wait until all three ranks are up, then stop the job the way a scheduler would.
  for (int i = 0; i < 200 && std::distance(fs::directory_iterator(dir), fs::directory_iterator()) < 3; ++i)
    usleep(50000);
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    std::ifstream f(dir / ("pid." + std::to_string(i)));
    pid_t pid = 0;
    if (f >> pid) pids.push_back(pid);
  }
  ASSERT_EQ(pids.size(), 3u);
  usleep(300000);
  auto t0 = std::chrono::steady_clock::now();
  kill(zsrun, SIGTERM);
  int status = 0;
  waitpid(zsrun, &status, 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << status;
  for (pid_t p : pids) EXPECT_FALSE(alive(p)) << "rank process " << p << " outlived zsrun";
  fs::remove_all(dir);
}

// ---- checkpoints under faults ------------------------------------------------------------------------------

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / fmt_dir(name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string job(int nproc, const std::string& args, const std::string& zsrun_flags = "") {
  return std::string(ZS_ZSRUN_PATH) + " --nproc-per-node " + std::to_string(nproc) + " --master-port 0 --grace 2 " +
         zsrun_flags + " -- " ZS_CKPT_PROG_PATH " " + args;
}

// A rank SIGKILLed while writing its file of a checkpoint (synchronously, or in checkpoint.async's thread):
// the job fails, the half-written checkpoint never becomes the latest, and the previous one verifies and
// resumes.
TEST(CheckpointFaults, RankKilledMidWriteLeavesThePreviousCheckpoint) {
  for (const std::string env : {"", "ZS_TEST_ASYNC_CHECKPOINT=1 "}) {
    const fs::path dir = fresh_dir("ckpt_midwrite");
    const CommandResult r = run_command(env + job(2, "kill-during-save " + dir.string()));
    EXPECT_NE(r.rc, 0) << r.output;
    EXPECT_NE(r.output.find("killed by signal 9 (KILL)"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("the second save completed"), std::string::npos) << r.output;
    const CommandResult v = run_command(ZS_ZSCKPT_PATH " verify " + dir.string());
    EXPECT_EQ(v.rc, 0) << v.output;
    EXPECT_NE(v.output.find("step-00000003 (step 3)"), std::string::npos) << v.output;
    const CommandResult resume = run_command(job(1, "train " + dir.string() + " 6"));
    EXPECT_EQ(resume.rc, 0) << resume.output;
    EXPECT_NE(resume.output.find("resumed from step 3"), std::string::npos) << resume.output;
    EXPECT_NE(resume.output.find("trained to step 6"), std::string::npos) << resume.output;
    fs::remove_all(dir);
  }
}

// zsrun --max-restarts: a rank SIGKILLed at step 34 of 60 (checkpoints every 10 steps); the restarted job
// resumes from step 30 and ends with parameters bit-identical to a run that was never interrupted. The same
// with checkpoint.async, where the kill may come before step 30's save is committed (then it resumes from 20),
// and with the optimizer's state, the parameters and the gradient shards on disk (offload.optimizer, params
// and grads: nvme), whose files the killed job leaves none of.
TEST(CheckpointFaults, RestartResumesFromTheLatestCheckpointExactly) {
  const fs::path nvme = fresh_dir("ckpt_restart_nvme");
  for (const std::string& env :
       {std::string(), std::string("ZS_TEST_ASYNC_CHECKPOINT=1 "), "ZS_TEST_NVME_PATH=" + nvme.string() + " "}) {
    const fs::path a = fresh_dir("ckpt_restart_a"), b = fresh_dir("ckpt_restart_b");
    const CommandResult killed = run_command(
        env + job(2, "train " + (a / "ckpt").string() + " 60 --kill-at 34 --out " + (a / "final.safetensors").string(),
                  "--max-restarts 1 --log-dir " + (a / "logs").string()));
    EXPECT_EQ(killed.rc, 0) << killed.output;
    // --log-dir keeps each attempt apart.
    EXPECT_NE(file_text(a / "logs/attempt-1/rank-0/stdout.log").find("resumed from step"), std::string::npos);
    EXPECT_TRUE(fs::exists(a / "logs/attempt-0/rank-1/stderr.log"));
    EXPECT_NE(killed.output.find("killed by signal 9 (KILL)"), std::string::npos) << killed.output;
    EXPECT_NE(killed.output.find("restarting the job (restart 1 of 1)"), std::string::npos) << killed.output;
    const bool from30 = killed.output.find("resumed from step 30") != std::string::npos;
    EXPECT_TRUE(from30 || (!env.empty() && killed.output.find("resumed from step 20") != std::string::npos))
        << killed.output;
    const CommandResult straight =
        run_command(job(2, "train " + (b / "ckpt").string() + " 60 --out " + (b / "final.safetensors").string()));
    EXPECT_EQ(straight.rc, 0) << straight.output;
    const std::string x = file_text(a / "final.safetensors"), y = file_text(b / "final.safetensors");
    EXPECT_FALSE(x.empty());
    EXPECT_TRUE(x == y) << "the restarted job's final parameters differ from the uninterrupted job's" << env;
    fs::remove_all(a);
    fs::remove_all(b);
  }
  EXPECT_TRUE(fs::is_empty(nvme))
      << "the optimizer state's, the parameters' and the gradients' files are unlinked from the start";
  fs::remove_all(nvme);
}

// Watchdog: a rank that stops participating mid-step (it sleeps in its backward) makes its peers' collective
// time out: they report the op, its sequence number, the peer and the unit, and zsrun stops the whole job.
TEST(Watchdog, StalledRankMidStepEndsTheJobWithAReport) {
  const fs::path dir = fresh_dir("watchdog");
  const auto t0 = std::chrono::steady_clock::now();
  const CommandResult r = run_command("ZS_COMM_TIMEOUT_S=2 " + job(2, "train " + dir.string() + " 10 --stall-at 3"));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.rc, 0) << r.output;
  EXPECT_LT(seconds, 30.0) << r.output;
  EXPECT_NE(r.output.find("[rank0]: rank 0 failed: rank 0: step 4: a collective of unit '"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("timed out after 2 s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("zsrun: rank 0"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
