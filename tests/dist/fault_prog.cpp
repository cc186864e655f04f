// A rank program that misbehaves on purpose (exit, SIGKILL, never joining, stalling) for the fault tests.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/bootstrap.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int rank = std::atoi(std::getenv("RANK") ? std::getenv("RANK") : "0");
  if (const char* dir = std::getenv("ZS_TEST_PIDDIR"))
    std::ofstream(std::string(dir) + "/pid." + std::to_string(rank)) << getpid();
  if (mode == "nostart" && rank == 1) return 0;  // this rank never joins the job
  try {
    zs::ProcessGroupOptions opts;
    opts.backend = zs::Backend::gloo;
    zs::ProcessGroup pg = zs::init_process_group(opts);
    std::vector<float> buf(1 << 16, 1.0f);
    auto v = zs::TensorView::flat(buf.data(), zs::DType::f32, static_cast<int64_t>(buf.size()));
    if (mode == "collateral-first") {  // the peer's failure (rank 0) exits before the cause (rank 1) dies
      if (rank == 0) return 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      raise(SIGKILL);
    }
    for (int step = 0;; ++step) {
      if (step == 3 && rank == 1) {
        if (mode == "exit3") {
          std::fprintf(stderr, "rank %d exits with status 3 on purpose\n", rank);
          std::exit(3);
        }
        if (mode == "sigkill") raise(SIGKILL);
        if (mode == "stall") std::this_thread::sleep_for(std::chrono::hours(1));
      }
      pg.world->all_reduce(v, v, zs::ReduceOp::sum).wait();
      if (mode == "ok" && step == 5) break;
    }
    std::printf("rank %d of %d (%s) done\n", pg.env.rank, pg.env.world_size, pg.env.launcher.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d failed: %s\n", rank, e.what());
    return 1;
  }
}
