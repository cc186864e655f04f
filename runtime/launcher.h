// The zsrun launcher: start the local ranks of a job, host the store, prefix output, fail fast, restart.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace zs::launcher {

struct Options {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // 0: pick a free port (single-node jobs)
  int max_restarts = 0;
  double grace_s = 5.0;  // between TERM and KILL when stopping ranks
  std::string config;    // --config: the engine YAML, checked before any rank starts; the ranks get ZS_CONFIG
  std::string log_dir;   // --log-dir: each rank's stdout and stderr also go to files there (log_path)
  std::vector<int> local_ranks_filter;  // --local-ranks-filter: the local ranks shown on the console (empty: all)
  std::vector<std::string> command;
};

using EnvList = std::vector<std::pair<std::string, std::string>>;

// The variables one local rank gets (pure; torchrun's names plus ZS_JOB_TOKEN, ZS_RESTART_COUNT and, with
// --config, ZS_CONFIG).
EnvList rank_env(const Options& o, int local_rank, int master_port, const std::string& token, int restart);

// --nproc-per-node as torchrun takes it: a number, or gpu (one rank per visible GPU), cpu (one per core) or
// auto (gpu when there is one, else cpu). Pure: `gpus` and `cpus` are what this node has.
struct Nproc {
  int count = 0;      // >= 1, or 0 with
  std::string error;  // why not
};
Nproc nproc_from(const std::string& text, int gpus, int cpus);

// Checks the options; returns an error message, empty when they are valid.
std::string validate(const Options& o);

// Runs the job to completion; returns zsrun's exit status (0 only when every rank exited 0).
int run(const Options& o);

}  // namespace zs::launcher
