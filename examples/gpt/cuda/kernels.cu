// The GPT's CUDA kernels (see kernels.h). Rows go to warps (layer norm, softmax) or blocks (the vocabulary
// row of the loss); element-wise kernels are grid-stride loops with 64-bit indices; both take 8 elements
// per step with 16-byte accesses where the sizes and pointers allow (with_width). f32 arithmetic, the
// formulas of model.h's CPU layers.
#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <initializer_list>

#include "core/cuda_check.h"
#include "examples/gpt/cuda/kernels.h"
#include "examples/gpt/cuda/warp.cuh"
#include "kernels/cuda/device_math.cuh"

namespace gpt::cuda::k {
namespace {

using zs::kernels::cuda::from_f32;
using zs::kernels::cuda::load;
using zs::kernels::cuda::Storage;
using zs::kernels::cuda::store;
using zs::kernels::cuda::to_f32;
template <DType T>
using S = typename Storage<T>::type;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kColTile = 32, kRowGroups = 8, kRowChunk = 256;  // column sums: a block is 32 columns x 8 rows
constexpr float kLnEps = 1e-5f;                                // model.h's kLnEps

// Runs f.template operator()<A>() for the activation dtype (f32 or bf16).
template <class F>
void on(DType t, F&& f) {
  if (t == DType::f32)
    f.template operator()<DType::f32>();
  else
    f.template operator()<DType::bf16>();
}

// Element-wise kernels and rows take V = 8 consecutive elements per step, with 16-byte accesses, when the
// lengths are multiples of 8 and every pointer is 16-byte aligned; else V = 1. f(V) launches.
template <class F>
void with_width(bool vector, F&& f) {
  if (vector)
    f.template operator()<8>();
  else
    f.template operator()<1>();
}

bool vectorizable(int64_t length, std::initializer_list<const void*> pointers) {
  if (length % 8 != 0) return false;
  for (const void* p : pointers)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;  // null is aligned
  return true;
}

int blocks_for(int64_t items) {
  return static_cast<int>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 65536));
}

int warp_row_blocks(int64_t rows) {
  return static_cast<int>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

void check_launch() {
  ZS_CHECK_CUDA(cudaGetLastError());
}

// The whole block's sum or max (every thread gets it); blockDim.x a multiple of 32.
template <bool Max>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = Max ? warp_max(v) : warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? part[lane] : (Max ? -FLT_MAX : 0.0f);
    w = Max ? warp_max(w) : warp_sum(w);
    if (lane == 0) part[0] = w;
  }
  __syncthreads();
  const float r = part[0];
  __syncthreads();
  return r;
}

// f(i) for i in [0, n), spread over the grid (64-bit indices).
template <class F>
__device__ __forceinline__ void grid_stride(int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <DType A, int V>
__global__ void add_bias_kernel(S<A>* y, const S<A>* b, const S<A>* res, int64_t rows, int cols) {
  grid_stride(rows * cols / V, [&](int64_t it) {
    const int64_t i = it * V;
    float v[V], bias[V], r[V];
    load<A, V>(y, i, v);
    load<A, V>(b, i % cols, bias);
    if (res) load<A, V>(res, i, r);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[k] += bias[k];
      if (res) v[k] += r[k];
    }
    store<A, V>(y, i, v);
  });
}

// partial[chunk][c] = {sum dy, sum dy xhat} over the chunk's rows.
template <DType A>
__global__ void column_partial_kernel(const S<A>* dy, const S<A>* x, const float* mean, const float* rstd, int rows,
                                      int cols, float2* partial) {
  __shared__ float sa[kRowGroups][kColTile + 1], sb[kRowGroups][kColTile + 1];
  const int c = blockIdx.x * kColTile + threadIdx.x, chunk = blockIdx.y;
  const int r1 = min(rows, (chunk + 1) * kRowChunk);
  float a = 0, b = 0;
  if (c < cols)
    for (int r = chunk * kRowChunk + threadIdx.y; r < r1; r += kRowGroups) {
      const int64_t i = static_cast<int64_t>(r) * cols + c;
      const float g = to_f32<A>(dy[i]);
      a += g;
      if (x) b += g * ((to_f32<A>(x[i]) - mean[r]) * rstd[r]);
    }
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    for (int k = 1; k < kRowGroups; ++k) a += sa[k][threadIdx.x], b += sb[k][threadIdx.x];
    partial[static_cast<int64_t>(chunk) * cols + c] = make_float2(a, b);
  }
}

template <DType G>
__global__ void column_finish_kernel(const float2* partial, int chunks, int cols, S<G>* sum, S<G>* xhat_sum) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float a = 0, b = 0;
  for (int k = 0; k < chunks; ++k) {
    const float2 p = partial[static_cast<int64_t>(k) * cols + c];
    a += p.x, b += p.y;
  }
  sum[c] = from_f32<G>(to_f32<G>(sum[c]) + a);
  if (xhat_sum) xhat_sum[c] = from_f32<G>(to_f32<G>(xhat_sum[c]) + b);
}

template <DType A, int V>
__global__ void layernorm_kernel(const S<A>* x, const S<A>* g, const S<A>* b, S<A>* y, float* mean, float* rstd,
                                 int rows, int d) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const S<A>* xr = x + static_cast<int64_t>(row) * d;
  S<A>* yr = y + static_cast<int64_t>(row) * d;
  float m = 0, v = 0, xv[V], gv[V], bv[V];
  for (int i = lane * V; i < d; i += 32 * V) {
    load<A, V>(xr, i, xv);
#pragma unroll
    for (int k = 0; k < V; ++k) m += xv[k];
  }
  m = warp_sum(m) / d;
  for (int i = lane * V; i < d; i += 32 * V) {
    load<A, V>(xr, i, xv);
#pragma unroll
    for (int k = 0; k < V; ++k) v += (xv[k] - m) * (xv[k] - m);
  }
  v = warp_sum(v) / d;
  const float s = 1.0f / sqrtf(v + kLnEps);
  for (int i = lane * V; i < d; i += 32 * V) {
    load<A, V>(xr, i, xv);
    load<A, V>(g, i, gv);
    load<A, V>(b, i, bv);
#pragma unroll
    for (int k = 0; k < V; ++k) xv[k] = (xv[k] - m) * s * gv[k] + bv[k];
    store<A, V>(yr, i, xv);
  }
  if (lane == 0) mean[row] = m, rstd[row] = s;
}

template <DType A, int V>
__global__ void layernorm_dx_kernel(const S<A>* x, const S<A>* g, const float* mean, const float* rstd, const S<A>* dy,
                                    S<A>* dx, int rows, int d, bool accumulate) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t base = static_cast<int64_t>(row) * d;
  const float m = mean[row], s = rstd[row];
  float s1 = 0, s2 = 0;  // sum dxhat, sum dxhat xhat
  float xv[V], gv[V], dyv[V], dxv[V];
  for (int i = lane * V; i < d; i += 32 * V) {
    load<A, V>(x, base + i, xv);
    load<A, V>(g, i, gv);
    load<A, V>(dy, base + i, dyv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float dxhat = dyv[k] * gv[k];
      s1 += dxhat;
      s2 += dxhat * ((xv[k] - m) * s);
    }
  }
  s1 = warp_sum(s1) / d;
  s2 = warp_sum(s2) / d;
  for (int i = lane * V; i < d; i += 32 * V) {
    load<A, V>(x, base + i, xv);
    load<A, V>(g, i, gv);
    load<A, V>(dy, base + i, dyv);
    if (accumulate) load<A, V>(dx, base + i, dxv);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - m) * s;
      const float v = s * (dyv[k] * gv[k] - s1 - xhat * s2);
      dxv[k] = accumulate ? v + dxv[k] : v;
    }
    store<A, V>(dx, base + i, dxv);
  }
}

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)

template <DType A, int V>
__global__ void gelu_kernel(const S<A>* x, S<A>* y, int64_t n) {
  grid_stride(n / V, [&](int64_t it) {
    float v[V];
    load<A, V>(x, it * V, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = 0.5f * v[k] * (1.0f + tanhf(kGeluK * (v[k] + 0.044715f * v[k] * v[k] * v[k])));
    store<A, V>(y, it * V, v);
  });
}

template <DType A, int V>
__global__ void gelu_backward_kernel(const S<A>* x, const S<A>* dy, S<A>* dx, int64_t n) {
  grid_stride(n / V, [&](int64_t it) {
    float v[V], g[V];
    load<A, V>(x, it * V, v);
    load<A, V>(dy, it * V, g);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float t = tanhf(kGeluK * (v[k] + 0.044715f * v[k] * v[k] * v[k]));
      const float du = kGeluK * (1.0f + 3.0f * 0.044715f * v[k] * v[k]);
      g[k] *= 0.5f * (1.0f + t) + 0.5f * v[k] * (1.0f - t * t) * du;
    }
    store<A, V>(dx, it * V, g);
  });
}

// A row's keys in steps of V per lane; keys past the query (j > q) count as masked.
template <DType A, int V>
__global__ void causal_softmax_kernel(S<A>* p, int64_t rows, int T) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int q = static_cast<int>(row % T);
  S<A>* r = p + row * T;
  float mx = -FLT_MAX, sum = 0, v[V];
  for (int j = lane * V; j <= q; j += 32 * V) {
    load<A, V>(r, j, v);
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (j + k <= q) mx = fmaxf(mx, v[k]);
  }
  mx = warp_max(mx);
  for (int j = lane * V; j <= q; j += 32 * V) {
    load<A, V>(r, j, v);
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (j + k <= q) sum += expf(v[k] - mx);
  }
  sum = warp_sum(sum);
  for (int j = lane * V; j < T; j += 32 * V) {
    load<A, V>(r, j, v);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = j + k <= q ? expf(v[k] - mx) / sum : 0.0f;
    store<A, V>(r, j, v);
  }
}

template <DType A, int V>
__global__ void causal_softmax_backward_kernel(const S<A>* p, S<A>* ds, int64_t rows, int T) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int q = static_cast<int>(row % T);
  const S<A>* pr = p + row * T;
  S<A>* dr = ds + row * T;
  float dot = 0, pv[V], dv[V];
  for (int j = lane * V; j <= q; j += 32 * V) {
    load<A, V>(pr, j, pv);
    load<A, V>(dr, j, dv);
#pragma unroll
    for (int k = 0; k < V; ++k)
      if (j + k <= q) dot += dv[k] * pv[k];
  }
  dot = warp_sum(dot);
  for (int j = lane * V; j < T; j += 32 * V) {
    load<A, V>(pr, j, pv);
    load<A, V>(dr, j, dv);
#pragma unroll
    for (int k = 0; k < V; ++k) dv[k] = j + k <= q ? pv[k] * (dv[k] - dot) : 0.0f;
    store<A, V>(dr, j, dv);
  }
}

template <DType A>
__global__ void embedding_kernel(const int* tokens, const S<A>* wte, const S<A>* wpe, S<A>* x, int64_t rows, int T,
                                 int d) {
  grid_stride(rows * d, [&](int64_t i) {
    const int64_t r = i / d, c = i % d;
    x[i] = from_f32<A>(to_f32<A>(wte[static_cast<int64_t>(tokens[r]) * d + c]) + to_f32<A>(wpe[(r % T) * d + c]));
  });
}

// dwpe[t, c] += sum_b dx[b, t, c]
template <DType A, DType G>
__global__ void position_grad_kernel(const S<A>* dx, S<G>* dwpe, int B, int T, int d) {
  const int64_t n = static_cast<int64_t>(T) * d;
  grid_stride(n, [&](int64_t i) {
    float s = 0;
    for (int b = 0; b < B; ++b) s += to_f32<A>(dx[static_cast<int64_t>(b) * n + i]);
    dwpe[i] = from_f32<G>(to_f32<G>(dwpe[i]) + s);
  });
}

// dwte[token[r], c] += dx[r, c] (atomics: tokens repeat)
template <DType A>
__global__ void token_grad_kernel(const int* tokens, const S<A>* dx, float* dwte, int64_t rows, int d) {
  grid_stride(rows * d,
              [&](int64_t i) { atomicAdd(dwte + static_cast<int64_t>(tokens[i / d]) * d + i % d, to_f32<A>(dx[i])); });
}

template <DType G>
__global__ void add_f32_kernel(S<G>* dst, const float* src, int64_t n) {
  grid_stride(n, [&](int64_t i) { dst[i] = from_f32<G>(to_f32<G>(dst[i]) + src[i]); });
}

// One block per row.
template <DType A>
__global__ void cross_entropy_kernel(S<A>* logits, const int* targets, int V, float* row_loss, bool gradient,
                                     float inv_rows) {
  S<A>* l = logits + static_cast<int64_t>(blockIdx.x) * V;
  float mx = -FLT_MAX, sum = 0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, to_f32<A>(l[j]));
  mx = block_reduce<true>(mx);
  for (int j = threadIdx.x; j < V; j += blockDim.x) sum += expf(to_f32<A>(l[j]) - mx);
  sum = block_reduce<false>(sum);
  const int t = targets[blockIdx.x];
  if (threadIdx.x == 0) row_loss[blockIdx.x] = logf(sum) - (to_f32<A>(l[t]) - mx);
  if (!gradient) return;
  __syncthreads();  // the target's logit is read before it is overwritten
  for (int j = threadIdx.x; j < V; j += blockDim.x)
    l[j] = from_f32<A>((expf(to_f32<A>(l[j]) - mx) / sum - (j == t ? 1.0f : 0.0f)) * inv_rows);
}

// One block: *mean = sum(v) / n in a fixed order.
__global__ void mean_kernel(const float* v, int n, float* mean) {
  float s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += v[i];
  s = block_reduce<false>(s);
  if (threadIdx.x == 0) *mean = s / static_cast<float>(n);
}

}  // namespace

void add_bias(cudaStream_t s, DType act, void* y, const void* b, const void* residual, int rows, int cols) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(cols, {y, b, residual}), [&]<int V>() {
      add_bias_kernel<A, V><<<blocks_for(int64_t{rows} * cols / V), kThreads, 0, s>>>(
          static_cast<S<A>*>(y), static_cast<const S<A>*>(b), static_cast<const S<A>*>(residual), rows, cols);
    });
  });
  check_launch();
}

int64_t column_sum_floats(int rows, int cols) {
  return 2 * int64_t{(rows + kRowChunk - 1) / kRowChunk} * cols;
}

void column_sums(cudaStream_t s, DType act, DType grad, const void* dy, const void* x, const float* mean,
                 const float* rstd, int rows, int cols, float* scratch, void* sum, void* xhat_sum) {
  const int chunks = (rows + kRowChunk - 1) / kRowChunk;
  auto* partial = reinterpret_cast<float2*>(scratch);
  on(act, [&]<DType A>() {
    column_partial_kernel<A><<<dim3((cols + kColTile - 1) / kColTile, chunks), dim3(kColTile, kRowGroups), 0, s>>>(
        static_cast<const S<A>*>(dy), static_cast<const S<A>*>(x), mean, rstd, rows, cols, partial);
  });
  check_launch();
  on(grad, [&]<DType G>() {
    column_finish_kernel<G><<<(cols + kThreads - 1) / kThreads, kThreads, 0, s>>>(
        partial, chunks, cols, static_cast<S<G>*>(sum), static_cast<S<G>*>(xhat_sum));
  });
  check_launch();
}

void layernorm(cudaStream_t s, DType act, const void* x, const void* g, const void* b, void* y, float* mean,
               float* rstd, int rows, int d) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(d, {x, g, b, y}), [&]<int V>() {
      layernorm_kernel<A, V><<<warp_row_blocks(rows), kThreads, 0, s>>>(
          static_cast<const S<A>*>(x), static_cast<const S<A>*>(g), static_cast<const S<A>*>(b), static_cast<S<A>*>(y),
          mean, rstd, rows, d);
    });
  });
  check_launch();
}

void layernorm_dx(cudaStream_t s, DType act, const void* x, const void* g, const float* mean, const float* rstd,
                  const void* dy, void* dx, int rows, int d, bool accumulate) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(d, {x, g, dy, dx}), [&]<int V>() {
      layernorm_dx_kernel<A, V><<<warp_row_blocks(rows), kThreads, 0, s>>>(
          static_cast<const S<A>*>(x), static_cast<const S<A>*>(g), mean, rstd, static_cast<const S<A>*>(dy),
          static_cast<S<A>*>(dx), rows, d, accumulate);
    });
  });
  check_launch();
}

void gelu(cudaStream_t s, DType act, const void* x, void* y, int64_t n) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(n, {x, y}), [&]<int V>() {
      gelu_kernel<A, V><<<blocks_for(n / V), kThreads, 0, s>>>(static_cast<const S<A>*>(x), static_cast<S<A>*>(y), n);
    });
  });
  check_launch();
}

void gelu_backward(cudaStream_t s, DType act, const void* x, const void* dy, void* dx, int64_t n) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(n, {x, dy, dx}), [&]<int V>() {
      gelu_backward_kernel<A, V><<<blocks_for(n / V), kThreads, 0, s>>>(
          static_cast<const S<A>*>(x), static_cast<const S<A>*>(dy), static_cast<S<A>*>(dx), n);
    });
  });
  check_launch();
}

void causal_softmax(cudaStream_t s, DType act, void* p, int64_t rows, int T) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(T, {p}), [&]<int V>() {
      causal_softmax_kernel<A, V><<<warp_row_blocks(rows), kThreads, 0, s>>>(static_cast<S<A>*>(p), rows, T);
    });
  });
  check_launch();
}

void causal_softmax_backward(cudaStream_t s, DType act, const void* p, void* ds, int64_t rows, int T) {
  on(act, [&]<DType A>() {
    with_width(vectorizable(T, {p, ds}), [&]<int V>() {
      causal_softmax_backward_kernel<A, V>
          <<<warp_row_blocks(rows), kThreads, 0, s>>>(static_cast<const S<A>*>(p), static_cast<S<A>*>(ds), rows, T);
    });
  });
  check_launch();
}

void embedding(cudaStream_t s, DType act, const int* tokens, const void* wte, const void* wpe, void* x, int B, int T,
               int d) {
  const int64_t rows = int64_t{B} * T;
  on(act, [&]<DType A>() {
    embedding_kernel<A><<<blocks_for(rows * d), kThreads, 0, s>>>(
        tokens, static_cast<const S<A>*>(wte), static_cast<const S<A>*>(wpe), static_cast<S<A>*>(x), rows, T, d);
  });
  check_launch();
}

void embedding_backward(cudaStream_t s, DType act, DType grad, const int* tokens, const void* dx, void* dwte,
                        void* dwpe, float* scratch, int B, int T, int d, int V) {
  const int64_t rows = int64_t{B} * T, table = int64_t{V} * d;
  float* target = grad == DType::f32 ? static_cast<float*>(dwte) : scratch;
  if (target == scratch) ZS_CHECK_CUDA(cudaMemsetAsync(scratch, 0, static_cast<std::size_t>(table) * 4, s));
  on(act, [&]<DType A>() {
    token_grad_kernel<A>
        <<<blocks_for(rows * d), kThreads, 0, s>>>(tokens, static_cast<const S<A>*>(dx), target, rows, d);
    check_launch();
    on(grad, [&]<DType G>() {
      position_grad_kernel<A, G><<<blocks_for(int64_t{T} * d), kThreads, 0, s>>>(static_cast<const S<A>*>(dx),
                                                                                 static_cast<S<G>*>(dwpe), B, T, d);
      check_launch();
      if (target == scratch) {
        add_f32_kernel<G><<<blocks_for(table), kThreads, 0, s>>>(static_cast<S<G>*>(dwte), scratch, table);
        check_launch();
      }
    });
  });
}

void cross_entropy(cudaStream_t s, DType act, void* logits, const int* targets, int rows, int V, float* row_loss,
                   float* mean, bool gradient) {
  on(act, [&]<DType A>() {
    cross_entropy_kernel<A><<<rows, kThreads, 0, s>>>(static_cast<S<A>*>(logits), targets, V, row_loss, gradient,
                                                      1.0f / static_cast<float>(rows));
  });
  check_launch();
  mean_kernel<<<1, 1024, 0, s>>>(row_loss, rows, mean);
  check_launch();
}

}  // namespace gpt::cuda::k
