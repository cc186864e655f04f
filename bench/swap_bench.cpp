// swap_bench: the optimizer's state on disk (offload.optimizer: nvme) against the same CPU step in memory.
// A model of --params parameters in --units equal units, AdamW with f32 master, m and v (12 B per parameter
// on disk, read and written every step: 24 B per parameter of disk traffic), timed three ways in one run:
//   memory: the AdamW update with the state in host memory (the offloaded step's CPU part, no disk);
//   disk:   each unit's region read, then written, one at a time on one thread (the disk's own pace for
//           this traffic, no update: the bound the streamed step can approach);
//   swap:   StateSwap streaming the units through --buffers buffers (reader and writer threads) while
//           this thread updates each one, as the offloaded step does.
// Medians of --steps; GB/s counts the disk traffic (24 B per parameter).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "core/buffer.h"
#include "kernels/kernels.h"
#include "offload/state_swap.h"

namespace {

using namespace zs;

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  double params = 1e8;
  int units = 16, buffers = 4, steps = 5, threads = 0;
  std::string dir = std::filesystem::temp_directory_path().string();
  CLI::App app{"swap_bench: the CPU AdamW step with its state on disk (offload.optimizer: nvme) vs in memory",
               "swap_bench"};
  app.add_option("--params", params, "parameters")->capture_default_str();
  app.add_option("--units", units, "equal units")->capture_default_str();
  app.add_option("--buffers", buffers, "offload.buffer_count")->capture_default_str();
  app.add_option("--steps", steps, "timed steps (after one warm-up)")->capture_default_str();
  app.add_option("--threads", threads, "CPU update threads (default: the cores)");
  app.add_option("--dir", dir, "offload.nvme_path")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) kernels::set_cpu_threads(threads);
  const auto n = static_cast<int64_t>(params / units);
  const offload::SwapRegion region = offload::swap_region(n * 4, n * 4, n * 4);
  const std::vector<offload::SwapRegion> regions(static_cast<std::size_t>(units), region);
  // The step's inputs: one gradient (the same for every unit), and the state in memory for the first way.
  Buffer grad(static_cast<std::size_t>(n) * 4, MemoryKind::host, Device::cpu(), MemCategory::grads);
  std::fill_n(static_cast<float*>(grad.data()), n, 1e-3f);
  Buffer state(static_cast<std::size_t>(region.size) * units, MemoryKind::host, Device::cpu(),
               MemCategory::optim_state);
  std::fill_n(static_cast<char*>(state.data()), state.bytes(), 0);
  Buffer mem(static_cast<std::size_t>(offload::swap_buffer_bytes(regions, buffers)), MemoryKind::host, Device::cpu(),
             MemCategory::optim_state);
  offload::StateSwap swap(dir, 0, regions, mem.data(), buffers);
  kernels::OptimizerHyper h;
  h.lr = 1e-4f;
  auto update = [&](const offload::StateSwap::Parts& p, int step) {
    kernels::UpdateArgs a;
    a.n = n;
    a.param = static_cast<float*>(p[0]);
    a.grad = grad.data();
    a.grad_dtype = DType::f32;
    a.state1 = p[1];
    a.state2 = p[2];
    h.step = step;
    kernels::optimizer_update(Device::cpu(), h, a);
  };
  auto parts_in_memory = [&](int u) {
    char* base = static_cast<char*>(state.data()) + region.size * u;
    return offload::StateSwap::Parts{base + region.offset[0], base + region.offset[1], base + region.offset[2]};
  };
  for (int u = 0; u < units; ++u) {  // the file's initial state
    swap.get(u);
    swap.put(u);
  }
  std::vector<double> t_mem, t_disk, t_swap;
  for (int s = 0; s <= steps; ++s) {
    double t0 = now_ms();
    for (int u = 0; u < units; ++u) update(parts_in_memory(u), s + 1);
    const double m = now_ms() - t0;
    t0 = now_ms();
    for (int u = 0; u < units; ++u) {
      swap.get(u);
      swap.put(u);
    }
    const double d = now_ms() - t0;
    t0 = now_ms();
    for (int u = 0; u < units; ++u) swap.prefetch(u);
    for (int u = 0; u < units; ++u) {
      update(swap.acquire(u), s + 1);
      swap.release(u);
    }
    swap.drain();
    const double w = now_ms() - t0;
    if (s == 0) continue;  // warm-up
    t_mem.push_back(m);
    t_disk.push_back(d);
    t_swap.push_back(w);
  }
  const double bytes = 24.0 * static_cast<double>(n) * units;
  const double mem_ms = median(t_mem), disk_ms = median(t_disk), swap_ms = median(t_swap);
  std::printf(
      "swap_bench: %.3g params in %d units, %d buffers of %.1f MiB, %s (%s), %d CPU threads; median of %d steps\n"
      "  memory %.1f ms | disk (read+write, one at a time) %.1f ms, %.2f GB/s | swap (streamed, updating) %.1f ms, "
      "%.2f GB/s: %.2fx the disk's time, %.2fx the in-memory step's\n",
      static_cast<double>(n) * units, units, buffers, static_cast<double>(region.size) / 1048576.0, dir.c_str(),
      swap.direct() ? "O_DIRECT" : "page cache", kernels::cpu_threads(), steps, mem_ms, disk_ms,
      bytes / disk_ms / 1e6, swap_ms, bytes / swap_ms / 1e6, swap_ms / disk_ms, swap_ms / mem_ms);
  return 0;
}
