// Process-group bootstrap: read the launcher's variables (zsrun/torchrun, Slurm, Open MPI), reach the store,
// build the world Comm.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/comm.h"
#include "core/store.h"

namespace zs {

struct JobEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0: no store hosted anywhere yet (a single process hosts its own)
  std::string token;
  std::string launcher = "none";  // zsrun | slurm | mpirun | none
  bool store_hosted = false;      // true when the launcher already runs the store (zsrun)
  int restart_count = 0;          // how many times zsrun has restarted the job (ZS_RESTART_COUNT)
};

// Reads the job's variables through `get` (std::getenv in production; a map in tests). Throws zs::Error
// naming the missing or malformed variable.
JobEnv job_env_from(const std::function<const char*(const char*)>& get);
JobEnv job_env();

struct ProcessGroupOptions {
  std::optional<Backend> backend;  // default: nccl when CUDA is built and a GPU is present, else gloo
  Millis timeout{300000};          // rendezvous and per-collective (comm.timeout_s)
};

// A joined job: the store connection (and the server, when this process hosts it) and the world group.
struct ProcessGroup {
  JobEnv env;
  std::unique_ptr<StoreServer> server;
  std::shared_ptr<Store> store;        // the job's store connection
  std::shared_ptr<Store> group_store;  // this restart attempt's namespace in it
  std::unique_ptr<Comm> world;
};

ProcessGroup init_process_group(const ProcessGroupOptions& opts = {});
// ZS_RENDEZVOUS_TIMEOUT_S or ZS_COMM_TIMEOUT_S from the environment when set, else `fallback`.
Millis timeout_from_env(const char* var, Millis fallback);
// GPUs this process sees (0 in a build without CUDA).
int cuda_device_count();
// True when this build has CUDA and the process sees at least one GPU.
bool cuda_available();

}  // namespace zs
