// The GPT's layers on the CPU, forward and backward, in float (training) or double (the finite-difference
// reference), with BLAS GEMMs. Row-major; activations are [rows, features]; a linear layer's weight is
// [out, in] (PyTorch's layout). Backward functions add into parameter gradients and overwrite input
// gradients unless they say otherwise.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace gpt {

// C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C, row-major, with leading dimensions.
template <typename T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta, T* c,
          int ldc) {
  const auto A = ta ? CblasTrans : CblasNoTrans, B = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, A, B, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, A, B, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// y[n, out] = x[n, in] W^T + b
template <typename T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int n, int in, int out) {
  gemm<T>(false, true, n, out, in, T(1), x, in, w, in, T(0), y, out);
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) y[static_cast<int64_t>(r) * out + o] += b[o];
}

// dx = dy W (overwrites; skipped when dx is null), dW += dy^T x, db += colsum(dy)
template <typename T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, T* db, int n, int in, int out) {
  if (dx) gemm<T>(false, false, n, in, out, T(1), dy, out, w, in, T(0), dx, in);
  gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dw, in);
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < out; ++o) db[o] += dy[static_cast<int64_t>(r) * out + o];
}

constexpr double kLnEps = 1e-5;

// y = (x - mean) / sqrt(var + eps) * g + b per row; keeps mean and 1/std per row for backward.
template <typename T>
void layernorm_forward(const T* x, const T* g, const T* b, T* y, T* mean, T* rstd, int n, int d) {
  for (int r = 0; r < n; ++r) {
    const T* xr = x + static_cast<int64_t>(r) * d;
    T m = 0, v = 0;
    for (int i = 0; i < d; ++i) m += xr[i];
    m /= d;
    for (int i = 0; i < d; ++i) v += (xr[i] - m) * (xr[i] - m);
    v /= d;
    const T s = T(1) / std::sqrt(v + T(kLnEps));
    mean[r] = m;
    rstd[r] = s;
    for (int i = 0; i < d; ++i) y[static_cast<int64_t>(r) * d + i] = (xr[i] - m) * s * g[i] + b[i];
  }
}

// dx (+= when accumulate) from dy; dg, db +=
template <typename T>
void layernorm_backward(const T* x, const T* g, const T* mean, const T* rstd, const T* dy, T* dx, T* dg, T* db, int n,
                        int d, bool accumulate) {
  for (int r = 0; r < n; ++r) {
    const T* xr = x + static_cast<int64_t>(r) * d;
    const T* dyr = dy + static_cast<int64_t>(r) * d;
    T* dxr = dx + static_cast<int64_t>(r) * d;
    T sum_dxhat = 0, sum_dxhat_xhat = 0;
    for (int i = 0; i < d; ++i) {
      const T xhat = (xr[i] - mean[r]) * rstd[r];
      const T dxhat = dyr[i] * g[i];
      dg[i] += dyr[i] * xhat;
      db[i] += dyr[i];
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
    for (int i = 0; i < d; ++i) {
      const T xhat = (xr[i] - mean[r]) * rstd[r];
      const T v = rstd[r] * (dyr[i] * g[i] - sum_dxhat / d - xhat * sum_dxhat_xhat / d);
      dxr[i] = accumulate ? dxr[i] + v : v;
    }
  }
}

// tanh for the float path without a libm call (tanhf was a fifth of a CPU training step): 1 - 2 / (e^z + 1)
// with z = 2u clamped to [-30, 30] (tanh is +-1 in float long before), e^z = 2^k e^r with k = round(z / ln 2),
// |r| <= ln 2 / 2 and e^r by its degree-7 Taylor polynomial. Within 1.8e-7 of tanh in absolute terms, the error
// GELU's 1 + tanh and 1 - tanh^2 see (libm's tanhf: 9.3e-8; tested against the double tanh); NaN in, NaN out.
inline float tanh_approx(float u) {
  if (u != u) return u;  // NaN stays NaN (and never reaches the float-to-int conversion)
  const float z = std::clamp(2.0f * u, -30.0f, 30.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const float kf = (z * 1.44269504088896341f + kRound) - kRound;
  const float r = (z - kf * 0.693145751953125f) - kf * 1.42860682030941723e-6f;  // ln 2 in two parts
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * std::bit_cast<float>((static_cast<int32_t>(kf) + 127) << 23);
  return 1.0f - 2.0f / (e + 1.0f);
}

template <typename T>
T tanh_of(T u) {
  if constexpr (std::is_same_v<T, float>)
    return tanh_approx(u);
  else
    return std::tanh(u);
}

// GELU, tanh approximation (GPT-2's).
template <typename T>
void gelu_forward(const T* x, T* y, int64_t n) {
  const T k = std::sqrt(T(2) / T(3.14159265358979323846));
  for (int64_t i = 0; i < n; ++i)
    y[i] = T(0.5) * x[i] * (T(1) + tanh_of(k * (x[i] + T(0.044715) * x[i] * x[i] * x[i])));
}

template <typename T>
void gelu_backward(const T* x, const T* dy, T* dx, int64_t n) {
  const T k = std::sqrt(T(2) / T(3.14159265358979323846));
  for (int64_t i = 0; i < n; ++i) {
    const T u = k * (x[i] + T(0.044715) * x[i] * x[i] * x[i]);
    const T t = tanh_of(u);
    const T du = k * (T(1) + T(3) * T(0.044715) * x[i] * x[i]);
    dx[i] = dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * x[i] * (T(1) - t * t) * du);
  }
}

// Causal self-attention over qkv [B*T, 3d] (q | k | v, heads of size d/H side by side) into out [B*T, d].
// probs [B, H, T, T] is kept for backward: plain attention, B*H*T*T values per layer.
template <typename T>
void attention_forward(const T* qkv, T* probs, T* out, int B, int Tn, int d, int H) {
  const int hd = d / H, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hd));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const T* q = qkv + static_cast<int64_t>(b) * Tn * ld + h * hd;
      const T* k = q + d;
      const T* v = q + 2 * d;
      T* p = probs + (static_cast<int64_t>(b) * H + h) * Tn * Tn;
      gemm<T>(false, true, Tn, Tn, hd, scale, q, ld, k, ld, T(0), p, Tn);
      for (int i = 0; i < Tn; ++i) {
        T* row = p + static_cast<int64_t>(i) * Tn;
        T mx = row[0];
        for (int j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
        T sum = 0;
        for (int j = 0; j <= i; ++j) sum += row[j] = std::exp(row[j] - mx);
        for (int j = 0; j <= i; ++j) row[j] /= sum;
        for (int j = i + 1; j < Tn; ++j) row[j] = 0;
      }
      gemm<T>(false, false, Tn, hd, Tn, T(1), p, Tn, v, ld, T(0), out + static_cast<int64_t>(b) * Tn * d + h * hd, d);
    }
}

// dqkv (overwritten) from dout; `scratch` holds T*T values.
template <typename T>
void attention_backward(const T* qkv, const T* probs, const T* dout, T* dqkv, T* scratch, int B, int Tn, int d, int H) {
  const int hd = d / H, ld = 3 * d;
  const T scale = T(1) / std::sqrt(T(hd));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int64_t base = static_cast<int64_t>(b) * Tn * ld + h * hd;
      const T* q = qkv + base;
      const T* k = q + d;
      const T* v = q + 2 * d;
      T* dq = dqkv + base;
      T* dk = dq + d;
      T* dv = dq + 2 * d;
      const T* p = probs + (static_cast<int64_t>(b) * H + h) * Tn * Tn;
      const T* dO = dout + static_cast<int64_t>(b) * Tn * d + h * hd;
      T* ds = scratch;
      gemm<T>(true, false, Tn, hd, Tn, T(1), p, Tn, dO, d, T(0), dv, ld);  // dV = P^T dO
      gemm<T>(false, true, Tn, Tn, hd, T(1), dO, d, v, ld, T(0), ds, Tn);  // dP = dO V^T
      for (int i = 0; i < Tn; ++i) {                                       // dS = P (dP - rowsum(dP P))
        T* row = ds + static_cast<int64_t>(i) * Tn;
        const T* pr = p + static_cast<int64_t>(i) * Tn;
        T dot = 0;
        for (int j = 0; j <= i; ++j) dot += row[j] * pr[j];
        for (int j = 0; j < Tn; ++j) row[j] = j <= i ? pr[j] * (row[j] - dot) : T(0);
      }
      gemm<T>(false, false, Tn, hd, Tn, scale, ds, Tn, k, ld, T(0), dq, ld);  // dQ = dS K / sqrt(hd)
      gemm<T>(true, false, Tn, hd, Tn, scale, ds, Tn, q, ld, T(0), dk, ld);   // dK = dS^T Q / sqrt(hd)
    }
}

// x[b, t] = wte[token] + wpe[t]
template <typename T>
void embedding_forward(const int* tokens, const T* wte, const T* wpe, T* x, int B, int Tn, int d) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t) {
      const int64_t r = static_cast<int64_t>(b) * Tn + t;
      const T* e = wte + static_cast<int64_t>(tokens[r]) * d;
      const T* p = wpe + static_cast<int64_t>(t) * d;
      for (int i = 0; i < d; ++i) x[r * d + i] = e[i] + p[i];
    }
}

template <typename T>
void embedding_backward(const int* tokens, const T* dx, T* dwte, T* dwpe, int B, int Tn, int d) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tn; ++t) {
      const int64_t r = static_cast<int64_t>(b) * Tn + t;
      T* e = dwte + static_cast<int64_t>(tokens[r]) * d;
      T* p = dwpe + static_cast<int64_t>(t) * d;
      for (int i = 0; i < d; ++i) {
        e[i] += dx[r * d + i];
        p[i] += dx[r * d + i];
      }
    }
}

// The tied LM head and the loss: logits = x wte^T [n, V]; returns the mean cross-entropy over the n rows;
// with dx non-null also its gradient: dx = dlogits wte (overwritten), dwte += dlogits^T x. `logits` is
// n*V scratch.
template <typename T>
double head_loss(const T* x, const T* wte, const int* targets, T* logits, T* dx, T* dwte, int n, int d, int V) {
  gemm<T>(false, true, n, V, d, T(1), x, d, wte, d, T(0), logits, V);
  double loss = 0;
  for (int r = 0; r < n; ++r) {
    T* row = logits + static_cast<int64_t>(r) * V;
    T mx = *std::max_element(row, row + V);
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(static_cast<double>(row[j] - mx));
    loss -= static_cast<double>(row[targets[r]] - mx) - std::log(sum);
    if (!dx) continue;
    for (int j = 0; j < V; ++j)  // dlogits = (softmax - onehot) / n
      row[j] = static_cast<T>((std::exp(static_cast<double>(row[j] - mx)) / sum - (j == targets[r])) / n);
  }
  if (dx) {
    gemm<T>(false, false, n, d, V, T(1), logits, V, wte, d, T(0), dx, d);
    gemm<T>(true, false, V, d, n, T(1), logits, V, x, d, T(1), dwte, d);
  }
  return loss / n;
}

}  // namespace gpt
