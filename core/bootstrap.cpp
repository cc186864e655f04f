// Bootstrap from launcher variables (torchrun names first, then Slurm, then Open MPI) into a world Comm.
#include "core/bootstrap.h"

#include <charconv>
#include <cstdlib>

#ifdef ZS_WITH_GLOO
#include "core/comm_gloo.h"
#endif
#include "core/error.h"
#include "core/log.h"
#include "core/socket.h"
#ifdef ZS_WITH_CUDA
#include "core/comm_nccl.h"
#include "core/cuda_check.h"
#endif

namespace zs {
namespace {

int parse_int(const char* name, const char* v) {
  int out = 0;
  const char* end = v + std::strlen(v);
  auto [p, ec] = std::from_chars(v, end, out);
  ZS_CHECK(ec == std::errc() && p == end, "environment variable {}='{}' is not an integer", name, v);
  return out;
}

}  // namespace

JobEnv job_env_from(const std::function<const char*(const char*)>& get) {
  JobEnv e;
  auto read = [&](std::initializer_list<const char*> names, int& out) {
    for (const char* n : names)
      if (const char* v = get(n)) {
        out = parse_int(n, v);
        return true;
      }
    return false;
  };
  if (get("RANK")) {
    e.launcher = get("ZS_LAUNCHER") ? get("ZS_LAUNCHER") : "torchrun";
    read({"RANK"}, e.rank);
    ZS_CHECK(read({"WORLD_SIZE"}, e.world_size), "RANK is set but WORLD_SIZE is not; launch with zsrun or set both");
    read({"LOCAL_RANK"}, e.local_rank);
    if (!read({"LOCAL_WORLD_SIZE"}, e.local_world_size)) e.local_world_size = e.world_size;
  } else if (get("SLURM_PROCID")) {
    e.launcher = "slurm";
    read({"SLURM_PROCID"}, e.rank);
    ZS_CHECK(read({"SLURM_NTASKS"}, e.world_size), "SLURM_PROCID is set but SLURM_NTASKS is not");
    read({"SLURM_LOCALID"}, e.local_rank);
    if (!read({"SLURM_NTASKS_PER_NODE"}, e.local_world_size)) e.local_world_size = e.world_size;
  } else if (get("OMPI_COMM_WORLD_RANK")) {
    e.launcher = "mpirun";
    read({"OMPI_COMM_WORLD_RANK"}, e.rank);
    ZS_CHECK(read({"OMPI_COMM_WORLD_SIZE"}, e.world_size),
             "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not");
    read({"OMPI_COMM_WORLD_LOCAL_RANK"}, e.local_rank);
    if (!read({"OMPI_COMM_WORLD_LOCAL_SIZE"}, e.local_world_size)) e.local_world_size = e.world_size;
  }
  ZS_CHECK(e.world_size >= 1, "the world size must be >= 1, got {}", e.world_size);
  ZS_CHECK(e.rank >= 0 && e.rank < e.world_size, "rank {} is outside a world of {} ranks", e.rank, e.world_size);
  if (const char* a = get("MASTER_ADDR")) e.master_addr = a;
  read({"MASTER_PORT"}, e.master_port);
  ZS_CHECK(e.world_size == 1 || e.master_port > 0,
           "a job of {} ranks needs MASTER_ADDR and MASTER_PORT (where rank 0's node hosts the store); zsrun sets "
           "them",
           e.world_size);
  if (const char* t = get("ZS_JOB_TOKEN"))
    e.token = t;
  else if (const char* j = get("SLURM_JOB_ID"))
    e.token = std::string("slurm-") + j;
  e.store_hosted = e.launcher == "zsrun";
  read({"ZS_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"}, e.restart_count);
  return e;
}

JobEnv job_env() {
  return job_env_from([](const char* n) { return std::getenv(n); });
}

Millis timeout_from_env(const char* var, Millis fallback) {
  const char* v = std::getenv(var);
  if (!v) return fallback;
  char* end = nullptr;
  double s = std::strtod(v, &end);
  ZS_CHECK(end && *end == '\0' && s > 0, "{}='{}' must be a positive number of seconds", var, v);
  return Millis(static_cast<int64_t>(s * 1000));
}

int cuda_device_count() {
#ifdef ZS_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

bool cuda_available() {
  return cuda_device_count() > 0;
}

ProcessGroup init_process_group(const ProcessGroupOptions& opts) {
  ProcessGroup pg;
  pg.env = job_env();
  log::set_rank(pg.env.rank);
  const Millis timeout = timeout_from_env("ZS_COMM_TIMEOUT_S", opts.timeout);
  const Millis rendezvous = timeout_from_env("ZS_RENDEZVOUS_TIMEOUT_S", timeout);
  // Without a launcher-hosted store, rank 0 hosts it (Slurm, mpirun, or a lone process).
  if (!pg.env.store_hosted && pg.env.rank == 0) {
    // Loopback only when every rank reaches the store through loopback; otherwise all interfaces.
    pg.server = std::make_unique<StoreServer>(net::is_loopback(pg.env.master_addr) ? "127.0.0.1" : "0.0.0.0",
                                              pg.env.master_port, pg.env.token);
    if (pg.env.master_port == 0) pg.env.master_port = pg.server->port();
  }
  pg.store = std::make_shared<TcpStore>(pg.env.master_addr, pg.env.master_port, pg.env.token, rendezvous);
  // Each restart attempt of the job (zsrun --max-restarts) rendezvous in its own key namespace.
  auto group_store = std::make_shared<PrefixStore>(*pg.store, fmt::format("attempt{}", pg.env.restart_count));
  pg.group_store = group_store;
  const Backend backend = opts.backend.value_or(cuda_available() ? Backend::nccl : Backend::gloo);
  CommOptions co{"world", timeout, rendezvous};
  if (backend == Backend::gloo) {
#ifdef ZS_WITH_GLOO
    pg.world = std::make_unique<GlooComm>(group_store, pg.env.rank, pg.env.world_size, co,
                                          net::local_address_towards(pg.env.master_addr));
#else
    ZS_FAIL("rank {}: the Gloo backend was asked for but this build leaves Gloo out (ZS_GLOO=OFF)", pg.env.rank);
#endif
  } else {
#ifdef ZS_WITH_CUDA
    int ngpu = 0;
    ZS_CHECK_CUDA(cudaGetDeviceCount(&ngpu));
    ZS_CHECK(ngpu > 0, "rank {}: the NCCL backend needs a GPU and none is visible", pg.env.rank);
    pg.world = std::make_unique<NcclComm>(group_store, pg.env.rank, pg.env.world_size, co,
                                          Device::cuda(pg.env.local_rank % ngpu));
#else
    ZS_FAIL("rank {}: the NCCL backend was asked for but this build has no CUDA; use comm.backend: gloo", pg.env.rank);
#endif
  }
  return pg;
}

}  // namespace zs
