// adamw_variants: the CUDA AdamW update as the kernels run it (f32 master, gradient, m and v: 28 B per
// parameter), beside variants that run the same item code (kernels/cuda/update_item.cuh) and change only
// how memory is reached: the cache policy of the 16-byte accesses (device_math.cuh's Cache), the grid
// (the kernels' grid-stride grid of 16 blocks per SM, one resident wave, one item per thread, or one
// resident wave whose blocks each take a contiguous chunk, as torch's multi-tensor kernels do), the item
// (the kernels' 8 elements, two 16-byte accesses per f32 operand that each fill half of the sectors a warp
// touches, or 4 elements, one 16-byte access, a warp's 512 contiguous bytes) and the depth (items whose
// loads a thread has in flight before it updates the first: near the memory's peak its latency grows, and
// so do the bytes in flight that hide it). Every
// variant's result is first checked bit for bit against the kernels' own on a small shard with a tail;
// then all are timed on the same buffers in interleaved rounds (median), next to a device-to-device copy of
// as many bytes. The lever a <= 10.0 ms AdamW over 1e9 parameters on an H100 needs (2.8 TB/s) is measured
// here before the kernels change.
//
//   adamw_variants [params = 1e9] [rounds = 10]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include "bench/cuda_time.h"
#include "core/cuda_check.h"
#include "kernels/cuda/update_item.cuh"
#include "kernels/kernels.h"
#include "kernels/update_scalars.h"

namespace {

using namespace zs;
using namespace zs::kernels;
using zs::kernels::cuda::Cache;

constexpr int kThreads = 256;

enum class Grid { strided, resident, flat, chunked };
const char* grid_name(Grid g) {
  switch (g) {
    case Grid::strided:
      return "16 blocks/SM, strided";
    case Grid::resident:
      return "one resident wave";
    case Grid::flat:
      return "item per thread";
    case Grid::chunked:
      return "one wave, block chunks";
  }
  return "?";
}
const char* cache_name(Cache c) {
  return c == Cache::normal ? "normal" : c == Cache::streaming ? "evict-first (.cs)" : "L2::256B prefetch";
}

// chunk == 0: grid-stride over the V-element items; else block b takes items [b * chunk, (b + 1) * chunk).
// D items (it, it + stride, ...) are loaded before the first is updated.
template <Cache C, int V, int D>
__global__ void adamw_kernel(UpdateScalars s, float* p, const float* g, float* m, float* v, int64_t n, int64_t chunk) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t items = n / V;
  const int64_t first = chunk ? blockIdx.x * chunk + threadIdx.x : tid;
  const int64_t chunk_end = (blockIdx.x + 1) * chunk;
  const int64_t end = chunk && chunk_end < items ? chunk_end : items;
  const int64_t stride = chunk ? blockDim.x : static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t it = first; it < end; it += D * stride) {
    cuda::UpdateItem<DType::f32, DType::f32, V, C> x[D];
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (it + d * stride < end) x[d].load(p, g, m, v, (it + d * stride) * V);
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (it + d * stride < end) {
        x[d].apply(s, true, nullptr, 0, (it + d * stride) * V);
        x[d].template store<DType::f32, false>(p, m, v, nullptr, (it + d * stride) * V);
      }
  }
  const int64_t t = items * V + tid;
  if (t < n) cuda::update_item<DType::f32, DType::f32, DType::f32, false, 1, C>(s, p, g, m, v, nullptr, nullptr, 0, t);
}

__global__ void fill_kernel(float* x, int64_t n, uint32_t seed, float lo, float hi) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32) * 40503u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    x[i] = lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
  }
}

struct Shard {
  int64_t n = 0;
  float *p = nullptr, *g = nullptr, *m = nullptr, *v = nullptr;
  explicit Shard(int64_t elements) : n(elements) {
    for (float** b : {&p, &g, &m, &v}) ZS_CHECK_CUDA(cudaMalloc(b, static_cast<size_t>(n) * 4));
    fill(1);
  }
  ~Shard() {
    for (float* b : {p, g, m, v}) cudaFree(b);
  }
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  void fill(uint32_t seed) {
    fill_kernel<<<1024, kThreads>>>(p, n, seed, -1.0f, 1.0f);
    fill_kernel<<<1024, kThreads>>>(g, n, seed + 1, -1e-2f, 1e-2f);
    fill_kernel<<<1024, kThreads>>>(m, n, seed + 2, -1e-3f, 1e-3f);
    fill_kernel<<<1024, kThreads>>>(v, n, seed + 3, 0.0f, 1e-4f);
    ZS_CHECK_CUDA(cudaGetLastError());
  }
  UpdateArgs args() const {
    UpdateArgs a;
    a.n = n;
    a.param = p;
    a.grad = g;
    a.state1 = m;
    a.state2 = v;
    return a;
  }
  std::vector<float> read() const {
    std::vector<float> out(static_cast<size_t>(3 * n));
    int64_t at = 0;
    for (const float* b : {p, m, v}) {
      ZS_CHECK_CUDA(cudaMemcpy(out.data() + at, b, static_cast<size_t>(n) * 4, cudaMemcpyDeviceToHost));
      at += n;
    }
    return out;
  }
};

struct Variant {
  Cache cache = Cache::normal;
  Grid grid = Grid::strided;
  int item = 8;          // elements per thread and iteration
  int depth = 1;         // items in flight per thread
  bool kernels = false;  // the kernels' own launch (kernels::optimizer_update)
  bool same = true;      // its result equals the kernels' bit for bit (only those are timed)
  std::vector<float> ms;
};

// Device 0's SMs, and the blocks of one resident wave of adamw_kernel<C, V, D>: asked once, outside the timed launches.
int sm_count() {
  static const int sms = [] {
    int n = 0;
    ZS_CHECK_CUDA(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, 0));
    return n;
  }();
  return sms;
}

template <Cache C, int V, int D>
int resident_blocks() {
  static const int blocks = [] {
    int per_sm = 0;
    ZS_CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, adamw_kernel<C, V, D>, kThreads, 0));
    return per_sm * sm_count();
  }();
  return blocks;
}

template <Cache C, int V, int D>
void launch(const UpdateScalars& s, const Shard& x, Grid grid) {
  const int64_t want = std::max<int64_t>(1, (x.n / V + kThreads - 1) / kThreads);
  int64_t blocks = want;
  if (grid == Grid::strided) blocks = std::min<int64_t>(want, int64_t{sm_count()} * 16);
  if (grid == Grid::resident || grid == Grid::chunked) blocks = std::min<int64_t>(want, resident_blocks<C, V, D>());
  const int64_t chunk = grid == Grid::chunked ? (x.n / V + blocks - 1) / blocks : 0;
  adamw_kernel<C, V, D><<<static_cast<unsigned>(blocks), kThreads>>>(s, x.p, x.g, x.m, x.v, x.n, chunk);
  ZS_CHECK_CUDA(cudaGetLastError());
}

template <int V, int D>
void launch(const UpdateScalars& s, const Shard& x, Cache cache, Grid grid) {
  switch (cache) {
    case Cache::normal:
      return launch<Cache::normal, V, D>(s, x, grid);
    case Cache::streaming:
      return launch<Cache::streaming, V, D>(s, x, grid);
    case Cache::prefetch:
      return launch<Cache::prefetch, V, D>(s, x, grid);
  }
}

void run(const Variant& var, const OptimizerHyper& h, const Shard& x) {
  if (var.kernels) return optimizer_update(Device::cuda(0), h, x.args());
  const UpdateScalars s = make_scalars(h, x.args());
  if (var.item == 4)
    return var.depth == 2 ? launch<4, 2>(s, x, var.cache, var.grid) : launch<4, 1>(s, x, var.cache, var.grid);
  if (var.depth == 2) return launch<8, 2>(s, x, var.cache, var.grid);
  launch<8, 1>(s, x, var.cache, var.grid);
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto n = static_cast<int64_t>(argc > 1 ? std::atof(argv[1]) : 1e9);
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 10;
    if (n < 1 || rounds < 1) {
      std::fprintf(stderr, "usage: adamw_variants [params >= 1] [rounds >= 1]\n");
      return 2;
    }
    std::vector<Variant> vars = {{Cache::normal, Grid::strided, 8, 1, true}};
    for (int item : {8, 4})
      for (Cache c : {Cache::normal, Cache::streaming, Cache::prefetch}) {
        for (Grid g : {Grid::strided, Grid::resident, Grid::flat, Grid::chunked}) vars.push_back({c, g, item});
        for (Grid g : {Grid::strided, Grid::resident}) vars.push_back({c, g, item, 2});
      }
    OptimizerHyper h;
    h.weight_decay = 0.1f;
    h.step = 10;
    // Correctness: every variant's master, m and v equal the kernels' bit for bit (a tail of 5 included).
    {
      Shard ref((1 << 20) + 5), x((1 << 20) + 5);
      run(vars[0], h, ref);
      const std::vector<float> want = ref.read();
      for (Variant& var : vars) {
        x.fill(1);
        run(var, h, x);
        var.same = x.read() == want;
        if (!var.same)
          std::fprintf(stderr,
                       "adamw_variants: %s, %s, %d-element items, %d in flight: result differs from the kernels' "
                       "update (not timed)\n",
                       cache_name(var.cache), grid_name(var.grid), var.item, var.depth);
      }
    }
    Shard x(n);
    // The copy moves as many bytes as the update: 14 B per parameter read and as many written.
    const size_t copy_bytes = static_cast<size_t>(n) * 14;
    void *src = nullptr, *dst = nullptr;
    ZS_CHECK_CUDA(cudaMalloc(&src, copy_bytes));
    ZS_CHECK_CUDA(cudaMalloc(&dst, copy_bytes));
    ZS_CHECK_CUDA(cudaMemset(src, 1, copy_bytes));
    std::vector<float> copy_ms;
    const std::size_t tried = vars.size();
    std::erase_if(vars, [](const Variant& var) { return !var.same; });
    const bool all_same = vars.size() == tried;
    for (Variant& var : vars) run(var, h, x);  // warm-up
    for (int r = 0; r < rounds; ++r) {
      copy_ms.push_back(bench::cuda_elapsed_ms(
          [&] { ZS_CHECK_CUDA(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice)); }));
      for (Variant& var : vars) var.ms.push_back(bench::cuda_elapsed_ms([&] { run(var, h, x); }));
    }
    cudaDeviceProp prop{};
    ZS_CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    const double copy_gbs = 2.0 * static_cast<double>(copy_bytes) / median(copy_ms) / 1e6;
    std::printf(
        "# adamw_variants on %s: %.3g f32 params (28 B/param), median of %d interleaved rounds; copy %.3f ms, "
        "%.0f GB/s\n",
        prop.name, static_cast<double>(n), rounds, median(copy_ms), copy_gbs);
    std::printf("# %-20s %-24s %5s %5s %10s %10s %8s %10s\n", "cache", "grid", "item", "depth", "time (ms)", "eff GB/s",
                "of copy", "vs kernels");
    const float base = median(vars[0].ms);
    for (const Variant& var : vars) {
      const float ms = median(var.ms);
      const double gbs = static_cast<double>(n) * 28.0 / ms / 1e6;
      std::printf("  %-20s %-24s %5d %5d %10.3f %10.1f %7.1f%% %10.3f\n",
                  var.kernels ? "the kernels' update" : cache_name(var.cache), grid_name(var.grid), var.item, var.depth,
                  ms, gbs, 100.0 * gbs / copy_gbs, ms / base);
    }
    cudaFree(src);
    cudaFree(dst);
    return all_same ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adamw_variants: %s\n", e.what());
    return 1;
  }
}
