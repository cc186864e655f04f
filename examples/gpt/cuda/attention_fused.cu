// Causal self-attention without the T x T probabilities (FlashAttention-2 style, bf16 tensor cores through
// mma.sync m16n8k16, f32 accumulation): a block takes a tile of 64 queries (or keys), its 4 warps 16 rows
// each, and walks the tiles of 64 keys (or queries) the causal mask leaves, the next tile's copy to shared
// memory (cp.async) overlapping the current one's products. Scores never leave registers: a product's
// accumulator fragment is, packed to bf16, the A fragment of the next product (FlashAttention-2's trick).
//
// Forward, per query tile: S = Q K^T, the online softmax (running row maximum and sum, the output rescaled
// when the maximum grows), O += P V; the log-sum-exp (B*H*T floats, base 2 of the scaled scores) is kept for
// the backward. Backward: delta = rowsum(dO * O) per query, then one kernel per key tile for dK and dV
// (walking the query tiles at or after it: S^T = K Q^T, P^T, dP^T = V dO^T, dS^T = P^T (dP^T - delta),
// dV += P^T dO, dK += dS^T Q) and one per query tile for dQ (walking the key tiles up to it: dQ += dS K),
// each recomputing P = exp(S - lse): no atomics, every output written once.
//
// Bytes: reads Q, K, V (and dO) tile by tile and writes O (dQ, dK, dV) once; nothing of size T^2 reaches
// global memory. Work per visible tile pair: 2 Q K^T-sized products forward, 7 backward (4 for dK and dV,
// 3 for dQ: S and dP are formed in both kernels), against plain attention's 2 + 5 over every pair of the
// full T x T products; the causal mask leaves 136 of 256 tile pairs at T = 1024. Per block of the 1.3 B
// GPT on an H100: forward 232 us (157 TFLOP/s), dK and dV 327 us, dQ 268 us (bench/RESULTS.md).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "core/cuda_check.h"
#include "examples/gpt/cuda/kernels.h"
#include "examples/gpt/cuda/warp.cuh"

namespace gpt::cuda::k {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kTile = 64, kWarps = 4, kThreads = 32 * kWarps;  // a tile: 64 rows, 16 per warp
constexpr float kLog2e = 1.4426950408889634f;

// A shared tile: 64 rows of a head's HD bf16 columns, rows HD + 8 apart so that the 8 rows an ldmatrix
// reads start on 8 different 16-byte bank groups.
template <int HD>
constexpr int kLd = HD + 8;
template <int HD>
constexpr int kTileElems = kTile* kLd<HD>;
// A kernel's shared memory: `tiles` tiles, then `floats` floats.
template <int HD>
constexpr int smem_bytes(int tiles, int floats) {
  return tiles * kTileElems<HD> * 2 + floats * 4;
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from global to shared memory, asynchronously; zeros when !valid (src is then not read).
__device__ __forceinline__ void copy16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A walk's step: starts copying the next tile (load(), when there is one) and waits for the current one,
// which then has landed for the whole block.
template <class Load>
__device__ __forceinline__ void next_tile(bool more, Load&& load) {
  if (more) {
    load();
    wait_copies<1>();
  } else {
    wait_copies<0>();
  }
  __syncthreads();
}

// Four 8 x 8 bf16 matrices from shared memory, lane l giving the address of row l % 8 of matrix l / 8; lane l
// receives row l / 4, columns 2 (l % 4) and +1 of each (of each transpose with `_t`).
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_t(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// c[16 x 8] += a[16 x 16] b[16 x 8] on the warp's tensor cores. Lane l (g = l / 4, t = l % 4) holds
// c[g][2t, 2t+1] in c[0..1] and c[g+8][2t, 2t+1] in c[2..3]; a and b as ldmatrix loads them.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// c[16 x 64] = a[16 x HD] b[64 x HD]^T: a the warp's 16 rows of a shared tile, b a shared tile.
template <int HD>
__device__ __forceinline__ void product_abt(float (&c)[8][4], const bf16* a, const bf16* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < 8; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t fa[4];
    ldmatrix(fa, a + (lane % 16) * kLd<HD> + kk * 16 + lane / 16 * 8);
#pragma unroll
    for (int jp = 0; jp < 4; ++jp) {  // b's rows 16 jp .. +15: two 8-column pieces of c
      uint32_t fb[4];
      ldmatrix(fb, b + (jp * 16 + lane % 8 + lane / 16 * 8) * kLd<HD> + kk * 16 + lane / 8 % 2 * 8);
      mma(c[2 * jp], fa, fb[0], fb[1]);
      mma(c[2 * jp + 1], fa, fb[2], fb[3]);
    }
  }
}

// c[16 x HD] += p[16 x 64] b[64 x HD]: p an accumulator of product_abt (rounded to bf16), b a shared tile.
template <int HD>
__device__ __forceinline__ void product_pb(float (&c)[HD / 8][4], const float (&p)[8][4], const bf16* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t fa[4] = {pack(p[2 * kk][0], p[2 * kk][1]), pack(p[2 * kk][2], p[2 * kk][3]),
                            pack(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int jp = 0; jp < HD / 16; ++jp) {
      uint32_t fb[4];
      ldmatrix_t(fb, b + (kk * 16 + lane % 16) * kLd<HD> + jp * 16 + lane / 16 * 8);
      mma(c[2 * jp], fa, fb[0], fb[1]);
      mma(c[2 * jp + 1], fa, fb[2], fb[3]);
    }
  }
}

// Rows row0 .. row0+63 of one head's HD columns (`src`: row 0 of them, rows `ld` elements apart) into a
// shared tile, asynchronously, zeros past the sequence's end. ld and the head's column are multiples of 8.
template <int HD>
__device__ void load_tile(bf16* dst, const bf16* src, int64_t ld, int row0, int T) {
  constexpr int kChunks = HD / 8;
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool valid = row0 + r < T;
    copy16(dst + r * kLd<HD> + c, src + (valid ? static_cast<int64_t>(row0 + r) * ld + c : 0), valid);
  }
}

// One float per row of the tile starting at row0 (src: this sequence and head's T floats), zeros past T;
// threads 0..63 load a, 64..127 b.
__device__ void load_stats(float* dst_a, const float* a, float* dst_b, const float* b, int row0, int T) {
  const int i = threadIdx.x % kTile, row = row0 + i;
  if (threadIdx.x < kTile)
    dst_a[i] = row < T ? a[row] : 0.0f;
  else
    dst_b[i] = row < T ? b[row] : 0.0f;
}

// The warp's accumulator rows (this lane's `row` and row + 8, of 16 from the tile's) times scale[0] and
// scale[1] to dst (the head's column 0 of row 0, rows ld apart), rows past T skipped.
template <int N>
__device__ void store_rows(const float (&c)[N][4], bf16* dst, int64_t ld, int row, int T, const float (&scale)[2]) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (row + 8 * half >= T) continue;
    bf16* out = dst + static_cast<int64_t>(row + 8 * half) * ld + 2 * t;
#pragma unroll
    for (int j = 0; j < N; ++j)
      *reinterpret_cast<__nv_bfloat162*>(out + 8 * j) =
          __floats2bfloat162_rn(c[j][2 * half] * scale[half], c[j][2 * half + 1] * scale[half]);
  }
}

// A block's place: its tile of 64 rows (of queries or keys; `longest_first` walks the grid backwards, for
// the query tiles whose walks are longest), its sequence b and head h, this lane's first row (g of its
// warp's 16; the second is row + 8) and its column pair's offset 2t within 8 columns, and where the head's
// columns are: q in qkv (k at +d, v at +2d; rows ld apart) and its rows of an [B*T, d] array.
struct Place {
  int tile, bh, b, h, row, col;
  int64_t ld;
  __device__ Place(bool longest_first, int H, int d)
      : tile(longest_first ? static_cast<int>(gridDim.x - 1 - blockIdx.x) : static_cast<int>(blockIdx.x)),
        bh(static_cast<int>(blockIdx.y)),
        b(bh / H),
        h(bh % H),
        row(tile * kTile + static_cast<int>(threadIdx.x / 32) * 16 + static_cast<int>(threadIdx.x % 32 / 4)),
        col(static_cast<int>(threadIdx.x % 4) * 2),
        ld(3 * int64_t{d}) {}
  template <int HD, class P>
  __device__ P* q(P* qkv, int T) const {
    return qkv + int64_t{b} * T * ld + h * HD;
  }
  template <int HD, class P>
  __device__ P* rows_of(P* x, int T, int d) const {
    return x + int64_t{b} * T * d + h * HD;
  }
  // This warp's 16 rows of a shared tile.
  template <int HD>
  __device__ const bf16* warp_rows(const bf16* tile) const {
    return tile + static_cast<int>(threadIdx.x / 32) * 16 * kLd<HD>;
  }
};

// Accumulator element (j, e) of a lane sits at row `row` + 8 (e / 2), column 8 j + `col` + e % 2 of its
// 16 x 64 piece.
__device__ __forceinline__ int row_of(int row, int e) {
  return row + 8 * (e / 2);
}
__device__ __forceinline__ int col_of(int col, int j, int e) {
  return 8 * j + col + e % 2;
}

__device__ __forceinline__ bool visible(int key, int query, int T) {
  return key <= query && query < T;  // key <= query < T implies key < T
}

// Reduces over the 4 lanes holding one accumulator row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Shared tiles: Q, then K and V of two key tiles (the next one loading while this one is used).
template <int HD>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* qkv, bf16* out, float* lse, int T, int d, int H, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  bf16* tiles = reinterpret_cast<bf16*>(raw);
  const Place at(true, H, d);
  const int qt = at.tile;
  const bf16* q = at.q<HD>(qkv, T);
  load_tile<HD>(tiles, q, at.ld, qt * kTile, T);
  load_tile<HD>(tiles + kTileElems<HD>, q + d, at.ld, 0, T);
  load_tile<HD>(tiles + 2 * kTileElems<HD>, q + 2 * d, at.ld, 0, T);
  commit();
  float o[HD / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // base-2 units of the scaled scores
  for (int kt = 0; kt <= qt; ++kt) {
    const bf16* k = tiles + (1 + 2 * (kt % 2)) * kTileElems<HD>;
    next_tile(kt < qt, [&] {
      bf16* next = tiles + (1 + 2 * ((kt + 1) % 2)) * kTileElems<HD>;
      load_tile<HD>(next, q + d, at.ld, (kt + 1) * kTile, T);
      load_tile<HD>(next + kTileElems<HD>, q + 2 * d, at.ld, (kt + 1) * kTile, T);
      commit();
    });
    float s[8][4];
    product_abt<HD>(s, at.warp_rows<HD>(tiles), k);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool hidden = kt == qt && col_of(at.col, j, e) > row_of(at.row, e) - qt * kTile;
        s[j][e] = hidden ? -INFINITY : s[j][e] * scale2;
        mx[e / 2] = fmaxf(mx[e / 2], s[j][e]);
      }
    float alpha[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float mn = fmaxf(m[i], quad_max(mx[i]));  // finite: a tile's first key is visible to its rows
      alpha[i] = exp2f(m[i] - mn);
      m[i] = mn;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = exp2f(s[j][e] - m[e / 2]);
        sum[e / 2] += s[j][e];
      }
#pragma unroll
    for (int i = 0; i < 2; ++i) l[i] = l[i] * alpha[i] + quad_sum(sum[i]);
#pragma unroll
    for (int j = 0; j < HD / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[j][e] *= alpha[e / 2];
    product_pb<HD>(o, s, k + kTileElems<HD>);
    __syncthreads();  // before the next iteration's copy overwrites these tiles
  }
  if (at.col == 0)
#pragma unroll
    for (int i = 0; i < 2; ++i)
      if (row_of(at.row, 2 * i) < T) lse[int64_t{at.bh} * T + row_of(at.row, 2 * i)] = m[i] + log2f(l[i]);
  store_rows(o, at.rows_of<HD>(out, T, d), d, at.row, T, {1.0f / l[0], 1.0f / l[1]});
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

// dK and dV of one key tile. Shared: K, V, then Q and dO of two query tiles, then lse and delta of two.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv, int T, int d,
                int H, float scale, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  bf16* tiles = reinterpret_cast<bf16*>(raw);
  float* stats = reinterpret_cast<float*>(raw + 6 * kTileElems<HD> * 2);
  const Place at(false, H, d);  // tile 0's walk is the longest, and comes first
  const int kt = at.tile, tiles_t = (T + kTile - 1) / kTile;
  const bf16* q = at.q<HD>(qkv, T);
  const bf16* dO = at.rows_of<HD>(dout, T, d);
  const float *lse_bh = lse + int64_t{at.bh} * T, *delta_bh = delta + int64_t{at.bh} * T;
  auto load = [&](int qt, int buf) {
    bf16* to = tiles + (2 + 2 * buf) * kTileElems<HD>;
    load_tile<HD>(to, q, at.ld, qt * kTile, T);
    load_tile<HD>(to + kTileElems<HD>, dO, d, qt * kTile, T);
    load_stats(stats + 2 * kTile * buf, lse_bh, stats + 2 * kTile * buf + kTile, delta_bh, qt * kTile, T);
    commit();
  };
  load_tile<HD>(tiles, q + d, at.ld, kt * kTile, T);
  load_tile<HD>(tiles + kTileElems<HD>, q + 2 * d, at.ld, kt * kTile, T);
  load(kt, 0);
  float dk[HD / 8][4] = {}, dv[HD / 8][4] = {};
  for (int qt = kt; qt < tiles_t; ++qt) {
    const int buf = (qt - kt) % 2;
    next_tile(qt + 1 < tiles_t, [&] { load(qt + 1, 1 - buf); });
    const bf16 *qs = tiles + (2 + 2 * buf) * kTileElems<HD>, *dos = qs + kTileElems<HD>;
    const float *ls = stats + 2 * kTile * buf, *ds = ls + kTile;
    const bool edge = qt == kt || (qt + 1) * kTile > T;  // the mask hides some of this tile's pairs
    float p[8][4], dp[8][4];
    product_abt<HD>(p, at.warp_rows<HD>(tiles), qs);  // S^T: this warp's keys x the tile's queries
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = col_of(at.col, j, e);
        const bool hidden = edge && !visible(row_of(at.row, e), qt * kTile + c, T);
        p[j][e] = hidden ? 0.0f : exp2f(p[j][e] * scale2 - ls[c]);
      }
    product_abt<HD>(dp, at.warp_rows<HD>(tiles + kTileElems<HD>), dos);  // dP^T = V dO^T
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[j][e] = p[j][e] * (dp[j][e] - ds[col_of(at.col, j, e)]);  // dS^T
    product_pb<HD>(dv, p, dos);                                                                // dV += P^T dO
    product_pb<HD>(dk, dp, qs);  // dK += dS^T Q (times scale below)
    __syncthreads();             // before the next iteration's copy overwrites these tiles
  }
  bf16* dk_out = at.q<HD>(dqkv, T) + d;
  store_rows(dv, dk_out + d, at.ld, at.row, T, {1.0f, 1.0f});
  store_rows(dk, dk_out, at.ld, at.row, T, {scale, scale});
}

// dQ of one query tile. Shared: Q, dO, then K and V of two key tiles.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const bf16* qkv, const bf16* dout, const float* lse, const float* delta, bf16* dqkv, int T, int d, int H,
              float scale, float scale2) {
  extern __shared__ __align__(128) unsigned char raw[];
  bf16* tiles = reinterpret_cast<bf16*>(raw);
  const Place at(true, H, d);
  const int qt = at.tile;
  const bf16* q = at.q<HD>(qkv, T);
  auto load = [&](int kt, int buf) {
    bf16* to = tiles + (2 + 2 * buf) * kTileElems<HD>;
    load_tile<HD>(to, q + d, at.ld, kt * kTile, T);
    load_tile<HD>(to + kTileElems<HD>, q + 2 * d, at.ld, kt * kTile, T);
    commit();
  };
  load_tile<HD>(tiles, q, at.ld, qt * kTile, T);
  load_tile<HD>(tiles + kTileElems<HD>, at.rows_of<HD>(dout, T, d), d, qt * kTile, T);
  load(0, 0);
  float row_lse[2], row_delta[2];  // zeros for rows past T (their dQ is not stored)
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row_of(at.row, 2 * i);
    row_lse[i] = r < T ? lse[int64_t{at.bh} * T + r] : 0.0f;
    row_delta[i] = r < T ? delta[int64_t{at.bh} * T + r] : 0.0f;
  }
  float dq[HD / 8][4] = {};
  for (int kt = 0; kt <= qt; ++kt) {
    const int buf = kt % 2;
    next_tile(kt < qt, [&] { load(kt + 1, 1 - buf); });
    const bf16 *ks = tiles + (2 + 2 * buf) * kTileElems<HD>, *vs = ks + kTileElems<HD>;
    float p[8][4], dp[8][4];
    product_abt<HD>(p, at.warp_rows<HD>(tiles), ks);  // S
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool hidden = kt == qt && col_of(at.col, j, e) > row_of(at.row, e) - qt * kTile;
        p[j][e] = hidden ? 0.0f : exp2f(p[j][e] * scale2 - row_lse[e / 2]);
      }
    product_abt<HD>(dp, at.warp_rows<HD>(tiles + kTileElems<HD>), vs);  // dP = dO V^T
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[j][e] = p[j][e] * (dp[j][e] - row_delta[e / 2]);  // dS
    product_pb<HD>(dq, dp, ks);                                                        // dQ += dS K (times scale below)
    __syncthreads();  // before the next iteration's copy overwrites these tiles
  }
  store_rows(dq, at.q<HD>(dqkv, T), at.ld, at.row, T, {scale, scale});
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
    const int bytes = smem_bytes<HD>(5, 0);
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
    const int kv_bytes = smem_bytes<HD>(6, 4 * kTile), q_bytes = smem_bytes<HD>(6, 0);
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
