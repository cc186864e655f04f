// Causal self-attention without the T x T probabilities (FlashAttention-style, bf16 tensor cores through
// WMMA): a block takes a tile of 64 queries (or keys), its 4 warps 16 rows each, and walks the tiles of
// 64 keys (or queries) the causal mask leaves, keeping scores in shared memory one 16 x 64 piece at a time.
//
// Forward, per query tile: pass 1 finds each row's log-sum-exp over its keys; pass 2 forms the normalised
// probabilities tile by tile and accumulates P V in tensor-core accumulators (two Q K^T products instead of
// one, and no rescaling of the output). The log-sum-exp (B*H*T floats) is kept for the backward.
// Backward: delta = rowsum(dO * O) per query, then one kernel per key tile for dK and dV (walking the query
// tiles at or after it) and one per query tile for dQ (walking the key tiles up to it), each recomputing
// P = exp(S - lse) and dS = P (dP - delta): no atomics, every output written once.
//
// Bytes: reads Q, K, V (and dO) tile by tile and writes O (dQ, dK, dV) once; nothing of size T^2 reaches
// global memory. Work: 2 + 5 Q K^T-sized products per visible tile pair in the backward, 3 in the forward,
// against 2 (forward) + 5 (backward with the probabilities recomputed) full T x T products for plain
// attention, where the causal mask halves the visible pairs.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>

#include "core/cuda_check.h"
#include "examples/gpt/cuda/kernels.h"
#include "examples/gpt/cuda/warp.cuh"

namespace gpt::cuda::k {
namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64, kWarps = 4, kThreads = 32 * kWarps;  // a tile: 64 rows, 16 per warp
constexpr int kS = kTile + 4;                                  // f32 scores: a warp's 16 x 64, row stride
constexpr int kP = kTile + 8;                                  // bf16 probabilities: row stride
constexpr float kLog2e = 1.4426950408889634f;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;  // the transpose of rows
using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared-memory layout of a kernel: `tiles` row tiles of 64 x HD bf16 (row stride HD + 8, so rows start
// on different banks), then each warp's f32 scores (16 x kS), `pieces` bf16 16 x kP pieces per warp, and
// two floats per tile row (log-sum-exp and delta). Offsets in bytes, each a multiple of 128.
template <int HD>
struct Layout {
  static constexpr int kLd = HD + 8;
  static constexpr int kTileBytes = kTile * kLd * 2;
  int tiles, pieces;
  __host__ __device__ constexpr int scores() const { return tiles * kTileBytes; }
  __host__ __device__ constexpr int piece(int i) const {
    return scores() + kWarps * 16 * kS * 4 + i * kWarps * 16 * kP * 2;
  }
  __host__ __device__ constexpr int stats() const { return piece(pieces); }
  __host__ __device__ constexpr int bytes() const { return stats() + 2 * kTile * 4; }
};

template <int HD>
struct Smem {
  unsigned char* base;
  Layout<HD> lay;
  __device__ bf16* tile(int i) const { return reinterpret_cast<bf16*>(base + i * Layout<HD>::kTileBytes); }
  // This warp's rows of tile i.
  __device__ bf16* rows(int i) const { return tile(i) + (threadIdx.x / 32) * 16 * Layout<HD>::kLd; }
  __device__ float* scores() const {
    return reinterpret_cast<float*>(base + lay.scores()) + (threadIdx.x / 32) * 16 * kS;
  }
  __device__ bf16* piece(int i) const {
    return reinterpret_cast<bf16*>(base + lay.piece(i)) + (threadIdx.x / 32) * 16 * kP;
  }
  __device__ float* lse() const { return reinterpret_cast<float*>(base + lay.stats()); }
  __device__ float* delta() const { return lse() + kTile; }
};

// Rows row0 .. row0+63 of one head's HD columns (`src`: row 0 of them, rows `ld` elements apart) into a
// shared tile, zeros past the sequence's end. 16-byte loads: ld and the head's column are multiples of 8.
template <int HD>
__device__ void load_tile(bf16* dst, const bf16* src, int64_t ld, int row0, int T) {
  constexpr int kChunks = HD / 8;
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < T) v = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(row0 + r) * ld + c);
    *reinterpret_cast<uint4*>(dst + r * Layout<HD>::kLd + c) = v;
  }
}

// One float per row of the tile starting at row0 (src: this sequence and head's T floats), zeros past T.
__device__ void load_stats(float* dst, const float* src, int row0, int T) {
  if (threadIdx.x < kTile) dst[threadIdx.x] = row0 + threadIdx.x < T ? src[row0 + threadIdx.x] : 0.0f;
}

// The warp's scores out[16 x 64] (f32, row stride kS) = a[16 x HD] b[64 x HD]^T, both shared rows.
template <int HD>
__device__ void scores(const bf16* a, const bf16* b, float* out) {
  constexpr int kLd = Layout<HD>::kLd;
  FragA fa[HD / 16];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, kLd);
#pragma unroll
  for (int j = 0; j < kTile / 16; ++j) {
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      FragBt fb;
      wmma::load_matrix_sync(fb, b + j * 16 * kLd + kk * 16, kLd);
      wmma::mma_sync(acc, fa[kk], fb, acc);
    }
    wmma::store_matrix_sync(out + j * 16, acc, kS, wmma::mem_row_major);
  }
}

// acc[16 x HD] += p[16 x 64] (bf16, row stride kP) tile[64 x HD] (shared rows).
template <int HD>
__device__ void accumulate(Acc (&acc)[HD / 16], const bf16* p, const bf16* tile) {
  constexpr int kLd = Layout<HD>::kLd;
  FragA fa[kTile / 16];
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) wmma::load_matrix_sync(fa[kk], p + kk * 16, kP);
#pragma unroll
  for (int j = 0; j < HD / 16; ++j)
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      FragB fb;
      wmma::load_matrix_sync(fb, tile + kk * 16 * kLd + j * 16, kLd);
      wmma::mma_sync(acc[j], fa[kk], fb, acc[j]);
    }
}

template <int HD>
__device__ void zero(Acc (&acc)[HD / 16]) {
#pragma unroll
  for (int j = 0; j < HD / 16; ++j) wmma::fill_fragment(acc[j], 0.0f);
}

// The warp's 16 rows (starting at row0) of acc * scale to dst (row 0 of the head's columns, rows ld apart),
// through `stage` (its scores), rows past T skipped.
template <int HD>
__device__ void store_rows(Acc (&acc)[HD / 16], float* stage, bf16* dst, int64_t ld, int row0, int T, float scale) {
  constexpr int kFrags = HD / 16 < 4 ? HD / 16 : 4, kHalf = kFrags * 8;  // fragments per pass, a lane's columns
  const int lane = threadIdx.x % 32, r = lane / 2, c0 = (lane % 2) * kHalf;
#pragma unroll
  for (int j0 = 0; j0 < HD / 16; j0 += kFrags) {
#pragma unroll
    for (int j = 0; j < kFrags; ++j) wmma::store_matrix_sync(stage + j * 16, acc[j0 + j], kS, wmma::mem_row_major);
    __syncwarp();
    if (row0 + r < T)
      for (int c = c0; c < c0 + kHalf; ++c)
        dst[static_cast<int64_t>(row0 + r) * ld + j0 * 16 + c] = __float2bfloat16(stage[r * kS + c] * scale);
    __syncwarp();
  }
}

// Lane l of a warp handles row r = l / 2 of its 16 and columns c0 = (l % 2) * 32 .. +32 of a 64-wide piece,
// its i-th step at column col(i): rotated by r / 8 + 2 (l % 2) so that the 32 lanes of a step read 32
// different banks of the f32 scores (row stride kS = 68 words moves a row 4 banks).
struct Lane {
  int r, c0, skew;
  __device__ Lane() : r(threadIdx.x % 32 / 2), c0(threadIdx.x % 2 * 32), skew(r / 8 + 2 * (threadIdx.x % 2)) {}
  __device__ int col(int i) const { return c0 + ((i + skew) & 31); }
};

// A block's place: its tile of 64 rows (of queries or keys; `longest_first` walks the grid backwards, for
// the query tiles whose walks are longest), its sequence b and head h, and where that head's columns are:
// q in qkv (k at +d, v at +2d; rows ld apart) and its rows of an [B*T, d] array (out, dout). `row` is this
// lane's row of the tile (Lane::r of its warp's 16).
struct Place {
  int tile, bh, b, h, row;
  int64_t ld;
  __device__ Place(bool longest_first, int H, int d, const Lane& ln)
      : tile(longest_first ? static_cast<int>(gridDim.x - 1 - blockIdx.x) : static_cast<int>(blockIdx.x)),
        bh(static_cast<int>(blockIdx.y)),
        b(bh / H),
        h(bh % H),
        row(tile * kTile + static_cast<int>(threadIdx.x / 32) * 16 + ln.r),
        ld(3 * int64_t{d}) {}
  template <int HD, class P>
  __device__ P* q(P* qkv, int T) const {
    return qkv + int64_t{b} * T * ld + h * HD;
  }
  template <int HD, class P>
  __device__ P* rows_of(P* x, int T, int d) const {
    return x + int64_t{b} * T * d + h * HD;
  }
};

__device__ __forceinline__ bool visible(int key, int query, int T) {
  return key <= query && query < T;  // key <= query < T implies key < T
}

template <int HD>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* qkv, bf16* out, float* lse, int T, int d, int H, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  const Smem<HD> sm{raw, Layout<HD>{3, 1}};
  const Lane ln;
  const Place at(true, H, d, ln);
  const int qt = at.tile, query = at.row;
  const int64_t ld = at.ld;
  const bf16* q = at.q<HD>(qkv, T);
  float* s = sm.scores();
  bf16* p = sm.piece(0);
  load_tile<HD>(sm.tile(0), q, ld, qt * kTile, T);
  float m = -INFINITY, l = 0;  // base-2 units of the scaled scores
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    load_tile<HD>(sm.tile(1), q + d, ld, kt * kTile, T);
    __syncthreads();
    scores<HD>(sm.rows(0), sm.tile(1), s);
    __syncwarp();
    float mx = -INFINITY;
    for (int i = 0; i < 32; ++i)
      if (const int c = ln.col(i); visible(kt * kTile + c, query, T)) mx = fmaxf(mx, s[ln.r * kS + c] * scale2);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float mn = fmaxf(m, mx);  // finite: key 0 is visible to every row
    float sum = 0;
    for (int i = 0; i < 32; ++i)
      if (const int c = ln.col(i); visible(kt * kTile + c, query, T)) sum += exp2f(s[ln.r * kS + c] * scale2 - mn);
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * exp2f(m - mn) + sum;
    m = mn;
  }
  const float row_lse = m + log2f(l);
  if (threadIdx.x % 2 == 0 && query < T) lse[int64_t{at.bh} * T + query] = row_lse;
  Acc o[HD / 16];
  zero<HD>(o);
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    load_tile<HD>(sm.tile(1), q + d, ld, kt * kTile, T);
    load_tile<HD>(sm.tile(2), q + 2 * d, ld, kt * kTile, T);
    __syncthreads();
    scores<HD>(sm.rows(0), sm.tile(1), s);
    __syncwarp();
    for (int i = 0; i < 32; ++i) {
      const int c = ln.col(i);
      p[ln.r * kP + c] =
          __float2bfloat16(visible(kt * kTile + c, query, T) ? exp2f(s[ln.r * kS + c] * scale2 - row_lse) : 0.0f);
    }
    __syncwarp();
    accumulate<HD>(o, p, sm.tile(2));
  }
  store_rows<HD>(o, s, at.rows_of<HD>(out, T, d), d, at.row - ln.r, T, 1.0f);
}

// delta[bh*T + t] = sum over the head's columns of dout * out, a warp per (row, head).
__global__ void delta_kernel(const bf16* out, const bf16* dout, float* delta, int64_t rows, int T, int d, int H) {
  const int64_t item = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (item >= rows * H) return;
  const int64_t row = item / H;
  const int h = static_cast<int>(item % H), hd = d / H, lane = threadIdx.x % 32;
  const int64_t base = row * d + int64_t{h} * hd;
  float sum = 0;
  for (int c = lane; c < hd; c += 32) sum += __bfloat162float(out[base + c]) * __bfloat162float(dout[base + c]);
  sum = warp_sum(sum);
  if (lane == 0) delta[(row / T * H + h) * T + row % T] = sum;
}

// dK and dV of one key tile (tiles: K, V, Q, dO; pieces: P^T, dS^T).
template <int HD>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv, int T, int d,
                int H, float scale, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  const Smem<HD> sm{raw, Layout<HD>{4, 2}};
  const Lane ln;
  const Place at(false, H, d, ln);  // tile 0's walk is the longest, and comes first
  const int kt = at.tile, key = at.row;
  const int64_t ld = at.ld;
  const bf16* q = at.q<HD>(qkv, T);
  const bf16* dO = at.rows_of<HD>(dout, T, d);
  float* s = sm.scores();
  bf16 *pt = sm.piece(0), *dst = sm.piece(1);
  load_tile<HD>(sm.tile(0), q + d, ld, kt * kTile, T);
  load_tile<HD>(sm.tile(1), q + 2 * d, ld, kt * kTile, T);
  Acc dk[HD / 16], dv[HD / 16];
  zero<HD>(dk);
  zero<HD>(dv);
  const int tiles = (T + kTile - 1) / kTile;
  for (int qt = kt; qt < tiles; ++qt) {
    __syncthreads();
    load_tile<HD>(sm.tile(2), q, ld, qt * kTile, T);
    load_tile<HD>(sm.tile(3), dO, d, qt * kTile, T);
    load_stats(sm.lse(), lse + int64_t{at.bh} * T, qt * kTile, T);
    load_stats(sm.delta(), delta + int64_t{at.bh} * T, qt * kTile, T);
    __syncthreads();
    scores<HD>(sm.rows(0), sm.tile(2), s);  // S^T: this warp's keys x the tile's queries
    __syncwarp();
    for (int i = 0; i < 32; ++i) {
      const int c = ln.col(i);
      pt[ln.r * kP + c] =
          __float2bfloat16(visible(key, qt * kTile + c, T) ? exp2f(s[ln.r * kS + c] * scale2 - sm.lse()[c]) : 0.0f);
    }
    __syncwarp();
    scores<HD>(sm.rows(1), sm.tile(3), s);  // dP^T = V dO^T
    __syncwarp();
    for (int i = 0; i < 32; ++i) {
      const int c = ln.col(i);
      dst[ln.r * kP + c] = __float2bfloat16(__bfloat162float(pt[ln.r * kP + c]) * (s[ln.r * kS + c] - sm.delta()[c]));
    }
    __syncwarp();
    accumulate<HD>(dv, pt, sm.tile(3));   // dV += P^T dO
    accumulate<HD>(dk, dst, sm.tile(2));  // dK += dS^T Q (times scale below)
  }
  bf16* dk_out = at.q<HD>(dqkv, T) + d;
  store_rows<HD>(dv, s, dk_out + d, ld, key - ln.r, T, 1.0f);
  store_rows<HD>(dk, s, dk_out, ld, key - ln.r, T, scale);
}

// dQ of one query tile (tiles: Q, dO, K, V; piece: dS).
template <int HD>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv, int T, int d, int H,
              float scale, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  const Smem<HD> sm{raw, Layout<HD>{4, 1}};
  const Lane ln;
  const Place at(true, H, d, ln);
  const int qt = at.tile, query = at.row, warp = threadIdx.x / 32;
  const int64_t ld = at.ld;
  const bf16* q = at.q<HD>(qkv, T);
  float* s = sm.scores();
  bf16* ds = sm.piece(0);
  load_tile<HD>(sm.tile(0), q, ld, qt * kTile, T);
  load_tile<HD>(sm.tile(1), at.rows_of<HD>(dout, T, d), d, qt * kTile, T);
  load_stats(sm.lse(), lse + int64_t{at.bh} * T, qt * kTile, T);
  load_stats(sm.delta(), delta + int64_t{at.bh} * T, qt * kTile, T);
  Acc dq[HD / 16];
  zero<HD>(dq);
  float p[32];
  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    load_tile<HD>(sm.tile(2), q + d, ld, kt * kTile, T);
    load_tile<HD>(sm.tile(3), q + 2 * d, ld, kt * kTile, T);
    __syncthreads();
    const float row_lse = sm.lse()[warp * 16 + ln.r], row_delta = sm.delta()[warp * 16 + ln.r];
    scores<HD>(sm.rows(0), sm.tile(2), s);  // S
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = ln.col(i);
      p[i] = visible(kt * kTile + c, query, T) ? exp2f(s[ln.r * kS + c] * scale2 - row_lse) : 0.0f;
    }
    __syncwarp();
    scores<HD>(sm.rows(1), sm.tile(3), s);  // dP = dO V^T
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const int c = ln.col(i);
      ds[ln.r * kP + c] = __float2bfloat16(p[i] * (s[ln.r * kS + c] - row_delta));
    }
    __syncwarp();
    accumulate<HD>(dq, ds, sm.tile(2));  // dQ += dS K (times scale below)
  }
  store_rows<HD>(dq, s, at.q<HD>(dqkv, T), ld, query - ln.r, T, scale);
}

// Runs Launch<HD> for the head size hd (16, 32, 64 or 128).
template <template <int> class Launch>
void for_head_size(int hd, cudaStream_t s, auto&&... args) {
  switch (hd) {
    case 16:
      return Launch<16>{}(s, args...);
    case 32:
      return Launch<32>{}(s, args...);
    case 64:
      return Launch<64>{}(s, args...);
    case 128:
      return Launch<128>{}(s, args...);
    default:
      ZS_CHECK_CUDA(cudaErrorInvalidValue);  // layers.cpp's check_fused_attention rules it out
  }
}

// Sets a kernel's shared-memory allowance, once (it is above the 48 KiB default at head size 128).
template <auto Kernel>
void allow(int bytes) {
  static const bool done = [&] {
    ZS_CHECK_CUDA(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  (void)done;
}

dim3 grid(int T, int B, int H) {
  return dim3(static_cast<unsigned>((T + kTile - 1) / kTile), static_cast<unsigned>(B * H));
}

template <int HD>
struct Forward {
  void operator()(cudaStream_t s, const void* qkv, float* lse, void* out, int B, int T, int d, int H) const {
    const int bytes = Layout<HD>{3, 1}.bytes();
    allow<forward_kernel<HD>>(bytes);
    forward_kernel<HD><<<grid(T, B, H), kThreads, bytes, s>>>(static_cast<const bf16*>(qkv), static_cast<bf16*>(out),
                                                              lse, T, d, H, kLog2e / std::sqrt(float{HD}));
    ZS_CHECK_CUDA(cudaGetLastError());
  }
};

template <int HD>
struct Backward {
  void operator()(cudaStream_t s, const void* qkv, const float* lse, const float* delta, const void* dout, void* dqkv,
                  int B, int T, int d, int H) const {
    const float scale = 1.0f / std::sqrt(float{HD});
    const auto* x = static_cast<const bf16*>(qkv);
    const auto* dO = static_cast<const bf16*>(dout);
    auto* dx = static_cast<bf16*>(dqkv);
    const int kv_bytes = Layout<HD>{4, 2}.bytes(), q_bytes = Layout<HD>{4, 1}.bytes();
    allow<dkdv_kernel<HD>>(kv_bytes);
    allow<dq_kernel<HD>>(q_bytes);
    dkdv_kernel<HD><<<grid(T, B, H), kThreads, kv_bytes, s>>>(x, dO, lse, delta, dx, T, d, H, scale, scale * kLog2e);
    ZS_CHECK_CUDA(cudaGetLastError());
    dq_kernel<HD><<<grid(T, B, H), kThreads, q_bytes, s>>>(x, dO, lse, delta, dx, T, d, H, scale, scale * kLog2e);
    ZS_CHECK_CUDA(cudaGetLastError());
  }
};

}  // namespace

void fused_attention(cudaStream_t s, const void* qkv, float* lse, void* out, int B, int T, int d, int H) {
  for_head_size<Forward>(d / H, s, qkv, lse, out, B, T, d, H);
}

void fused_attention_backward(cudaStream_t s, const void* qkv, const void* out, const float* lse, const void* dout,
                              void* dqkv, float* delta, int B, int T, int d, int H) {
  const int64_t items = int64_t{B} * T * H;
  delta_kernel<<<static_cast<unsigned>((items + kWarps - 1) / kWarps), kThreads, 0, s>>>(
      static_cast<const bf16*>(out), static_cast<const bf16*>(dout), delta, int64_t{B} * T, T, d, H);
  ZS_CHECK_CUDA(cudaGetLastError());
  for_head_size<Backward>(d / H, s, qkv, lse, static_cast<const float*>(delta), dout, dqkv, B, T, d, H);
}

}  // namespace gpt::cuda::k
