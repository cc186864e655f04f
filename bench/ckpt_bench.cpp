// ckpt_bench: how long save_checkpoint holds the training, synchronous against checkpoint.async, for a
// model of --params parameters in --units units (AdamW, f32 states: 12 bytes per parameter in the files).
// "blocked" is the time save_checkpoint takes (what a training step waits), "done" the time until the save is
// committed (wait_checkpoint), and GB/s the files' bytes over "done". Runs under zsrun or as a lone process;
// every rank writes its shard's file into --dir.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "runtime/cli.h"
#include "runtime/engine.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ckpt_bench: save_checkpoint's blocking time, synchronous and checkpoint.async"};
  double params = 1e8;
  int units = 16, saves = 5;
  std::string dir = "/tmp/zs_ckpt_bench", device = "auto";
  app.add_option("--params", params, "parameters")->check(CLI::PositiveNumber);
  app.add_option("--units", units, "units (one tensor each)")->check(zs::positive());
  app.add_option("--saves", saves, "timed saves per mode (the median is shown)")->check(zs::positive());
  app.add_option("--dir", dir, "checkpoint root (removed at the end)");
  app.add_option("--device", device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  CLI11_PARSE(app, argc, argv);
  try {
    const int64_t per_unit = static_cast<int64_t>(params) / units;
    for (bool async : {false, true}) {
      zs::Config cfg;
      cfg.device = device;
      cfg.zero.stage = 3;
      cfg.checkpoint.async = async;
      cfg.checkpoint.keep = 1;
      zs::Engine e(cfg);
      for (int u = 0; u < units; ++u) e.add_unit("layer." + std::to_string(u), {{"w", {per_unit}}});
      e.init_params(zs::init::uniform(-0.03f, 0.03f, 1));
      const bool r0 = e.comm().rank() == 0;
      if (r0 && !async)
        std::printf("# ckpt_bench: %.3g params in %d units on %d rank(s), %s; files in %s\n", params, units,
                    e.comm().size(), e.device().str().c_str(), dir.c_str());
      if (r0 && !async) std::printf("# mode     blocked (ms)    done (ms)   files GB/s\n");
      std::vector<double> blocked, done;
      for (int s = 0; s < saves + 1; ++s) {  // the first save warms the page cache and the directory
        e.comm().barrier().wait();
        const auto t0 = Clock::now();
        e.save_checkpoint(dir);
        const double b = ms_since(t0);
        e.wait_checkpoint();
        e.comm().barrier().wait();
        const double d = ms_since(t0);
        if (s > 0) blocked.push_back(b), done.push_back(d);
      }
      std::sort(blocked.begin(), blocked.end());
      std::sort(done.begin(), done.end());
      const double file_bytes = 12.0 * static_cast<double>(per_unit) * units;  // f32 master, m, v
      if (r0)
        std::printf("%-6s %14.1f %12.1f %12.2f\n", async ? "async" : "sync", blocked[blocked.size() / 2],
                    done[done.size() / 2], file_bytes / (done[done.size() / 2] * 1e6));
      e.comm().barrier().wait();
      if (r0) std::filesystem::remove_all(dir);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_bench: %s\n", e.what());
    return 1;
  }
}
