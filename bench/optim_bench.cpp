// optim_bench: optimizer-update throughput against copy bandwidth measured in the same run.
// Effective GB/s counts the bytes the update must move (AdamW, f32 master/grad/m/v: 16 B read + 12 B
// written = 28 B/param, +2 B with a fused bf16 copy); copy GB/s counts read + write of a copy of the same
// number of bytes, made without write-allocate traffic (see copy()).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "core/buffer.h"
#include "core/error.h"
#include "kernels/kernels.h"
#ifdef ZS_WITH_CUDA
#include <cuda_runtime_api.h>

#include "bench/cuda_time.h"
#include "core/cuda_check.h"
#endif

namespace {

using namespace zs;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string device = "cpu";
  double params = 5e7;
  std::string optimizer = "adamw";
  std::string grad = "f32";
  std::string state = "f32";
  std::string out = "none";
  std::vector<int> threads;
  int iters = 5;
};

// Median seconds of `iters` runs of f (after one warm-up).
template <typename F>
double time_median(Device d, int iters, F&& f) {
  std::vector<double> t;
  f();
  for (int i = 0; i < iters; ++i) {
#ifdef ZS_WITH_CUDA
    if (d.is_cuda()) {
      t.push_back(bench::cuda_elapsed_ms(f) / 1e3);
      continue;
    }
#endif
    auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Fills with distinct non-zero values of dtype t (all-zero pages can be shared or compressed by a VM host,
// which would make a bandwidth benchmark measure the cache).
void fill(Device d, Buffer& b, DType t, float scale) {
  std::mt19937 rng(static_cast<unsigned>(b.bytes()));
  std::uniform_real_distribution<float> u(0.5f, 1.0f);
  const std::size_t es = dtype_size(t), chunk = std::size_t{1} << 20;
  std::vector<uint8_t> host(chunk * es);
  for (std::size_t i = 0; i < chunk; ++i) store_from_f32(host.data(), t, i, u(rng) * scale);
  for (std::size_t off = 0; off < b.bytes(); off += host.size())
    memory_copy(static_cast<char*>(b.data()) + off, d, host.data(), Device::cpu(),
                std::min(host.size(), b.bytes() - off));
}

// f(lo, hi) on `threads` threads, over [0, n) cut into consecutive slices whose starts are multiples of
// `grain`; returns when all are done.
template <typename F>
void in_slices(int threads, int64_t n, int64_t grain, F f) {
  const int64_t slice = std::max(grain, (n / threads + grain - 1) / grain * grain);
  std::vector<std::thread> pool;
  for (int64_t lo = 0; lo < n; lo += slice) pool.emplace_back([=] { f(lo, std::min(n, lo + slice)); });
  for (auto& th : pool) th.join();
}

// The reference copy: on CPU one large memcpy per thread (glibc streams it with non-temporal stores, so
// each byte counted is a byte moved; a cached-store copy would also read every destination line first);
// on CUDA a device-to-device cudaMemcpyAsync.
void copy(Device d, Buffer& dst, const Buffer& src, int threads) {
#ifdef ZS_WITH_CUDA
  if (d.is_cuda()) {
    ZS_CHECK_CUDA(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice));
    return;
  }
#endif
  auto* to = static_cast<char*>(dst.data());
  const auto* from = static_cast<const char*>(src.data());
  in_slices(threads, static_cast<int64_t>(src.bytes()), 64,
            [=](int64_t lo, int64_t hi) { std::memcpy(to + lo, from + lo, static_cast<std::size_t>(hi - lo)); });
}

// The update's memory accesses without its arithmetic (CPU, f32 operands): each thread streams its slice of
// the parameter and the states, read and written in place, and of the gradient, read, adding the gradient
// to each. The same bytes in the same pattern as the update, so update / this is how close the update
// comes to the memory's rate for its own traffic (a copy's non-temporal stores are another pattern).
// In blocks of 16 elements, so the compiler vectorises each block whole (no alias checks, no versioning,
// whatever the caller it is inlined into: the measured rate is the memory's, not the loop's).
void same_access_range(float* __restrict p, const float* __restrict g, float* __restrict s1, float* __restrict s2,
                       int64_t lo, int64_t hi) {
  constexpr int64_t kBlock = 16;
  int64_t i = lo;
  for (; i + kBlock <= hi; i += kBlock)
    for (int64_t k = i; k < i + kBlock; ++k) {
      p[k] += g[k];
      if (s1) s1[k] += g[k];
      if (s2) s2[k] += g[k];
    }
  for (; i < hi; ++i) {
    p[i] += g[i];
    if (s1) s1[i] += g[i];
    if (s2) s2[i] += g[i];
  }
}

void same_access(float* p, const float* g, float* s1, float* s2, int64_t n, int threads) {
  in_slices(threads, n, 16, [=](int64_t lo, int64_t hi) { same_access_range(p, g, s1, s2, lo, hi); });
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"optim_bench: optimizer update throughput vs copy bandwidth (same run, same memory)", "optim_bench"};
  app.add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  app.add_option("--params", a.params, "parameters in the shard")->capture_default_str();
  app.add_option("--optimizer", a.optimizer, "adamw, adam, sgd or lion")
      ->check(CLI::IsMember({"adamw", "adam", "sgd", "lion"}))
      ->capture_default_str();
  app.add_option("--grad", a.grad, "gradient dtype: f32, bf16, f16")->capture_default_str();
  app.add_option("--state", a.state, "optimizer state dtype: f32, bf16")->capture_default_str();
  app.add_option("--param-out", a.out, "fused compute-dtype copy: none, bf16, f16")->capture_default_str();
  app.add_option("--threads", a.threads, "CPU thread counts to run (default: 1 and all cores)");
  app.add_option("--iters", a.iters, "timed runs (median reported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const Device dev = Device::parse(a.device);
    const int64_t n = static_cast<int64_t>(a.params);
    const DType gt = dtype_parse(a.grad), st = dtype_parse(a.state);
    kernels::OptimizerHyper h;
    h.kind = a.optimizer == "adamw"  ? kernels::Optimizer::adamw
             : a.optimizer == "adam" ? kernels::Optimizer::adam
             : a.optimizer == "sgd"  ? kernels::Optimizer::sgd
                                     : kernels::Optimizer::lion;
    h.weight_decay = 0.1f;
    const MemoryKind mk = MemoryKind::device;
    Buffer p(n * 4, mk, dev, MemCategory::master), g(n * dtype_size(gt), mk, dev, MemCategory::grads);
    Buffer m(n * dtype_size(st), mk, dev, MemCategory::optim_state),
        v(n * dtype_size(st), mk, dev, MemCategory::optim_state);
    Buffer out(a.out == "none" ? 0 : n * 2, mk, dev, MemCategory::params);
    fill(dev, p, DType::f32, 1.0f);
    fill(dev, g, gt, 1e-2f);
    fill(dev, m, st, 1e-3f);
    fill(dev, v, st, 1e-4f);
    kernels::UpdateArgs u;
    u.n = n;
    u.param = static_cast<float*>(p.data());
    u.grad = g.data();
    u.grad_dtype = gt;
    u.state1 = h.kind == kernels::Optimizer::sgd && h.beta1 == 0 ? nullptr : m.data();
    u.state2 = h.kind == kernels::Optimizer::adamw || h.kind == kernels::Optimizer::adam ? v.data() : nullptr;
    u.state_dtype = st;
    u.param_out = a.out == "none" ? nullptr : out.data();
    u.param_out_dtype = a.out == "f16" ? DType::f16 : DType::bf16;
    const int64_t bpe = kernels::update_bytes_per_element(u);
    // The copy moves as many bytes as the update: src + dst of (bpe / 2) bytes per element each.
    const int64_t copy_elems = n * bpe / 8;
    Buffer src(copy_elems * 4, mk, dev, MemCategory::other), dst(copy_elems * 4, mk, dev, MemCategory::other);
    fill(dev, src, DType::f32, 1.0f);
    fill(dev, dst, DType::f32, 2.0f);
    std::vector<int> threads = a.threads;
    if (threads.empty()) threads = dev.is_cpu() ? std::vector<int>{1, kernels::cpu_threads()} : std::vector<int>{0};
    std::printf("# optim_bench: %s on %s (%s), %.3g params, grad %s, state %s, param-out %s: %ld B/param moved\n",
                a.optimizer.c_str(), dev.str().c_str(), dev.is_cpu() ? kernels::cpu_isa() : "cuda", a.params,
                a.grad.c_str(), a.state.c_str(), a.out.c_str(), static_cast<long>(bpe));
    // On the CPU with f32 operands and no parameter copy, the update's own access pattern is timed too.
    const bool same = dev.is_cpu() && gt == DType::f32 && st == DType::f32 && !u.param_out;
    std::printf("# %7s %12s %12s %10s %10s %8s%s\n", "threads", "time (ms)", "Gparams/s", "eff GB/s", "copy GB/s",
                "ratio", same ? "  same-access GB/s    ratio" : "");
    for (int t : threads) {
      if (dev.is_cpu()) kernels::set_cpu_threads(t);
      const double tu = time_median(dev, a.iters, [&] {
        h.step++;
        kernels::optimizer_update(dev, h, u);
      });
      const double tc = time_median(dev, a.iters, [&] { copy(dev, dst, src, t); });
#ifdef ZS_WITH_CUDA
      if (dev.is_cuda()) ZS_CHECK_CUDA(cudaDeviceSynchronize());
#endif
      const double eff = static_cast<double>(n) * static_cast<double>(bpe) / tu / 1e9;
      const double copy = static_cast<double>(copy_elems) * 8.0 / tc / 1e9;
      std::printf("  %7d %12.3f %12.3f %10.2f %10.2f %7.1f%%", t, tu * 1e3, static_cast<double>(n) / tu / 1e9, eff,
                  copy, 100.0 * eff / copy);
      if (same) {
        const double ts = time_median(dev, a.iters, [&] {
          same_access(u.param, static_cast<const float*>(u.grad), static_cast<float*>(u.state1),
                      static_cast<float*>(u.state2), n, t);
        });
        const double access = static_cast<double>(n) * static_cast<double>(bpe) / ts / 1e9;
        std::printf(" %17.2f %7.1f%%", access, 100.0 * eff / access);
      }
      std::printf("\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "optim_bench: %s\n", e.what());
    return 1;
  }
}
