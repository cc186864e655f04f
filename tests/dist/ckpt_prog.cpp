// A training job for the checkpoint fault tests: the test model through the engine, saving every 10 steps,
// resuming from the latest checkpoint when there is one. It can kill one of its ranks at a chosen step or in
// the middle of writing a checkpoint.
//   ckpt_prog train DIR STEPS [--kill-at K] [--stall-at K] [--out FILE]   (FILE: the final parameters)
//   ckpt_prog kill-during-save DIR
// With ZS_TEST_ASYNC_CHECKPOINT=1 it saves with checkpoint.async; with ZS_TEST_NVME_PATH=DIR its optimizer
// state, its parameters and its gradient shards are on disk in DIR (offload.optimizer, params, grads: nvme).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "runtime/checkpoint.h"
#include "runtime/engine.h"
#include "tests/dist/engine_harness.h"

namespace {

using namespace zs;
namespace fs = std::filesystem;

const test::Case kCase{3, DType::f32, 2, 1, 1.0f};

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 2 ? argv[1] : "";
  const std::string dir = argc > 2 ? argv[2] : "";
  const int rank = env_int("RANK");
  try {
    Config cfg = test::make_config(kCase);
    cfg.checkpoint.dir = dir;
    cfg.checkpoint.async = env_int("ZS_TEST_ASYNC_CHECKPOINT") == 1;
    if (const char* nvme = std::getenv("ZS_TEST_NVME_PATH")) {
      cfg.offload.optimizer = "nvme";
      cfg.offload.params = "nvme";
      cfg.offload.grads = "nvme";
      cfg.offload.nvme_path = nvme;
    }
    if (mode == "train") {
      const int steps = argc > 3 ? std::atoi(argv[3]) : 0;
      int kill_at = -1, stall_at = -1;
      std::string out;
      for (int i = 4; i + 1 < argc; i += 2) {
        if (std::string(argv[i]) == "--kill-at") kill_at = std::atoi(argv[i + 1]);
        if (std::string(argv[i]) == "--stall-at") stall_at = std::atoi(argv[i + 1]);
        if (std::string(argv[i]) == "--out") out = argv[i + 1];
      }
      cfg.checkpoint.every_steps = 10;
      Engine e(cfg);
      for (auto& [name, tensors] : test::model_units()) e.add_unit(name, tensors);
      if (!ckpt::find_latest(dir).empty()) {
        e.load_checkpoint(dir);
        if (rank == 0) std::printf("resumed from step %lld\n", static_cast<long long>(e.steps_done()));
      } else {
        e.init_params(test::kInit);
      }
      const bool first_attempt = env_int("ZS_RESTART_COUNT") == 0;
      test::Tamper die = [&](int step, int, int, TensorView) {
        if (step == kill_at && rank == 1 && first_attempt) raise(SIGKILL);
        if (step == stall_at && rank == 1) std::this_thread::sleep_for(std::chrono::hours(1));  // stops participating
      };
      test::train(kCase, e, steps - static_cast<int>(e.steps_done()), die);
      if (!out.empty()) e.save_weights(out);
      if (rank == 0) std::printf("trained to step %lld\n", static_cast<long long>(e.steps_done()));
      return 0;
    }
    if (mode == "kill-during-save") {
      Engine e(cfg);
      test::train(kCase, e, 3);
      e.save_checkpoint(dir);
      e.wait_checkpoint();  // (async) committed before the file-size limit below
      test::train(kCase, e, 2);
      if (rank == 1) {
        // Dies mid-write, every time: its file of the step-5 checkpoint may grow to 4 KiB (of ~50), and the
        // write past that raises SIGXFSZ, which turns into SIGKILL at that very write.
        signal(SIGXFSZ, [](int) { raise(SIGKILL); });
        rlimit lim{};
        getrlimit(RLIMIT_FSIZE, &lim);
        lim.rlim_cur = 4096;
        setrlimit(RLIMIT_FSIZE, &lim);
      }
      e.save_checkpoint(dir);
      e.wait_checkpoint();
      std::printf("rank %d: the second save completed\n", rank);
      return 0;
    }
    std::fprintf(stderr,
                 "usage: ckpt_prog train DIR STEPS [--kill-at K] [--stall-at K] [--out FILE] | kill-during-save DIR\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d failed: %s\n", rank, e.what());
    return 1;
  }
}
