// zsrun: the command-line front end of the launcher (CLI11).
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/bootstrap.h"
#include "runtime/cli.h"
#include "runtime/launcher.h"

int main(int argc, char** argv) {
  zs::launcher::Options o;
  CLI::App app{
      "zsrun: launch the ranks of a ZeroShard job (torchrun's contract).\n"
      "Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and ZS_JOB_TOKEN;\n"
      "node 0 hosts the rendezvous store; output lines are prefixed with [rankN]:. When a rank fails the others\n"
      "get SIGTERM, then SIGKILL after a grace period, and zsrun exits non-zero naming the rank (and repeating\n"
      "its last lines on stderr when other output buried them).",
      "zsrun"};
  std::string nproc = "1";
  app.add_option("--nproc-per-node", nproc,
                 "ranks to start on this node: a number, or gpu (one per visible GPU), cpu (one per core) or auto "
                 "(gpu when there is one, else cpu)")
      ->capture_default_str();
  auto* nnodes = app.add_option("--nnodes", o.nnodes, "nodes in the job")->capture_default_str();
  auto* node_rank =
      app.add_option("--node-rank", o.node_rank, "this node's index in [0, nnodes)")->capture_default_str();
  auto* addr =
      app.add_option("--master-addr", o.master_addr, "address of node 0, which hosts the store")->capture_default_str();
  auto* port = app.add_option("--master-port", o.master_port, "store port on node 0; 0 picks a free one (single node)")
                   ->capture_default_str();
  bool standalone = false;
  app.add_flag("--standalone", standalone, "a single-node job on a free port (torchrun's; as --master-port 0)")
      ->excludes(nnodes, node_rank, addr, port);
  app.add_option("--max-restarts", o.max_restarts,
                 "restart the whole job up to N times after a failure (ranks see ZS_RESTART_COUNT and resume from "
                 "their latest checkpoint)")
      ->capture_default_str();
  app.add_option("--grace", o.grace_s, "seconds between SIGTERM and SIGKILL when stopping ranks")
      ->capture_default_str();
  app.add_option("--config", o.config,
                 "the engine YAML: checked before any rank starts (a bad one fails once, at its line and column); "
                 "the ranks get its path in ZS_CONFIG (zs::Config::from_job)");
  app.add_option("--log-dir", o.log_dir,
                 "also write each rank's stdout and stderr, as the program wrote them, to "
                 "DIR/attempt-K/rank-R/{stdout,stderr}.log (K counts restarts)");
  app.add_option("--local-ranks-filter", o.local_ranks_filter,
                 "show only these local ranks' output on the console, e.g. 0 or 0,3 (all of it still goes to "
                 "--log-dir; a failed rank's last stderr lines are repeated in the failure report)")
      ->delimiter(',');
  app.add_option("command", o.command, "the program to run on every rank, and its arguments")->required();
  app.positionals_at_end();
  if (const auto stop = zs::parse_command_line(app, argc, argv)) return *stop;
  if (standalone) o.master_port = 0;
  if (!o.config.empty()) {
    try {
      o.config = std::filesystem::absolute(o.config).string();  // the ranks may start elsewhere
      zs::Config::from_yaml_file(o.config);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zsrun: --config: %s\n", e.what());
      return 2;
    }
  }
  const bool ask_cuda = nproc == "gpu" || nproc == "auto";  // (initialises the driver: only when asked)
  const zs::launcher::Nproc n = zs::launcher::nproc_from(nproc, ask_cuda ? zs::cuda_device_count() : 0,
                                                         static_cast<int>(std::thread::hardware_concurrency()));
  if (n.count < 1) {
    std::fprintf(stderr, "zsrun: %s\n", n.error.c_str());
    return 2;
  }
  o.nproc_per_node = n.count;
  return zs::launcher::run(o);
}
