// The GPT's CUDA layers: cuBLAS GEMMs around the kernels of kernels.cu, in the order of model.h's CPU
// layers, so each is checked against its CPU twin (tests/gpu/test_gpt_cuda.cpp).
#include "examples/gpt/cuda/layers.h"

#include <cmath>

#include "core/error.h"
#include "examples/gpt/cuda/kernels.h"

namespace gpt::cuda {
namespace {

cudaDataType cuda_type(zs::DType t) {
  ZS_CHECK(t == zs::DType::f32 || t == zs::DType::bf16, "the GPT's CUDA layers take f32 or bf16, not {}",
           zs::dtype_name(t));
  return t == zs::DType::f32 ? CUDA_R_32F : CUDA_R_16BF;
}

void check_blas(cublasStatus_t s, const char* what) {
  ZS_CHECK(s == CUBLAS_STATUS_SUCCESS, "{} failed: {} ({})", what, cublasGetStatusName(s), cublasGetStatusString(s));
}

}  // namespace

int64_t column_sum_scratch(int rows, int cols) {
  return k::column_sum_floats(rows, cols);
}

// Row-major X is column-major X^T, so this is cuBLAS's C^T = op(B)^T op(A)^T.
void gemm(const Ctx& c, bool ta, bool tb, int m, int n, int k, float alpha, const void* a, int lda, const void* b,
          int ldb, float beta, void* C, zs::DType c_type, int ldc, int batch, int64_t sa, int64_t sb, int64_t sc) {
  const cudaDataType in = cuda_type(c.act), out = cuda_type(c_type);
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1)
    check_blas(cublasGemmEx(c.blas, opb, opa, n, m, k, &alpha, b, in, ldb, a, in, lda, &beta, C, out, ldc,
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
  else
    check_blas(cublasGemmStridedBatchedEx(c.blas, opb, opa, n, m, k, &alpha, b, in, ldb, sb, a, in, lda, sa, &beta, C,
                                          out, ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx");
}

void linear_forward(const Ctx& c, const void* x, const void* w, const void* b, void* y, int n, int in, int out,
                    const void* residual) {
  gemm(c, false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, c.act, out);
  k::add_bias(c.stream, c.act, y, b, residual, n, out);
}

void linear_backward(const Ctx& c, const void* x, const void* w, const void* dy, void* dx, void* dw, void* db, int n,
                     int in, int out) {
  if (dx) gemm(c, false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, c.act, in);
  gemm(c, true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, c.grad, in);
  k::column_sums(c.stream, c.act, c.grad, dy, nullptr, nullptr, nullptr, n, out, c.colsum, db, nullptr);
}

void layernorm_forward(const Ctx& c, const void* x, const void* g, const void* b, void* y, float* mean, float* rstd,
                       int n, int d) {
  k::layernorm(c.stream, c.act, x, g, b, y, mean, rstd, n, d);
}

void layernorm_backward(const Ctx& c, const void* x, const void* g, const float* mean, const float* rstd,
                        const void* dy, void* dx, void* dg, void* db, int n, int d, bool accumulate) {
  k::layernorm_dx(c.stream, c.act, x, g, mean, rstd, dy, dx, n, d, accumulate);
  k::column_sums(c.stream, c.act, c.grad, dy, x, mean, rstd, n, d, c.colsum, db, dg);
}

void gelu_forward(const Ctx& c, const void* x, void* y, int64_t n) {
  k::gelu(c.stream, c.act, x, y, n);
}

void gelu_backward(const Ctx& c, const void* x, const void* dy, void* dx, int64_t n) {
  k::gelu_backward(c.stream, c.act, x, dy, dx, n);
}

// Per sequence b, one batched GEMM over the H heads: head h's q, k and v are columns h*hd of the q, k and
// v thirds of qkv's rows (stride hd between heads), its probabilities a T x T matrix (stride T*T).
void attention_probs(const Ctx& c, const void* qkv, void* probs, int B, int T, int d, int H) {
  const int hd = d / H, ld = 3 * d;
  const int64_t es = static_cast<int64_t>(zs::dtype_size(c.act)), tt = int64_t{T} * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int b = 0; b < B; ++b) {
    const char* q = static_cast<const char*>(qkv) + int64_t{b} * T * ld * es;
    gemm(c, false, true, T, T, hd, scale, q, ld, q + int64_t{d} * es, ld, 0.0f,
         static_cast<char*>(probs) + int64_t{b} * H * tt * es, c.act, T, H, hd, hd, tt);
  }
  k::causal_softmax(c.stream, c.act, probs, int64_t{B} * H * T, T);
}

void attention_forward(const Ctx& c, const void* qkv, void* probs, void* out, int B, int T, int d, int H) {
  const int hd = d / H, ld = 3 * d;
  const int64_t es = static_cast<int64_t>(zs::dtype_size(c.act)), tt = int64_t{T} * T;
  attention_probs(c, qkv, probs, B, T, d, H);
  for (int b = 0; b < B; ++b) {
    const char* v = static_cast<const char*>(qkv) + (int64_t{b} * T * ld + 2 * d) * es;
    gemm(c, false, false, T, hd, T, 1.0f, static_cast<const char*>(probs) + int64_t{b} * H * tt * es, T, v, ld, 0.0f,
         static_cast<char*>(out) + int64_t{b} * T * d * es, c.act, d, H, tt, hd, hd);
  }
}

void attention_backward(const Ctx& c, const void* qkv, const void* probs, const void* dout, void* dqkv, void* scratch,
                        int B, int T, int d, int H) {
  const int hd = d / H, ld = 3 * d;
  const int64_t es = static_cast<int64_t>(zs::dtype_size(c.act)), tt = int64_t{T} * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  auto at = [&](const void* p, int64_t elements) {
    return const_cast<char*>(static_cast<const char*>(p)) + elements * es;
  };
  for (int b = 0; b < B; ++b) {
    const char *q = at(qkv, int64_t{b} * T * ld), *kk = q + int64_t{d} * es, *v = q + 2 * int64_t{d} * es;
    char *dq = at(dqkv, int64_t{b} * T * ld), *dk = dq + int64_t{d} * es, *dv = dq + 2 * int64_t{d} * es;
    const char* p = at(probs, int64_t{b} * H * tt);
    const char* dO = at(dout, int64_t{b} * T * d);
    gemm(c, true, false, T, hd, T, 1.0f, p, T, dO, d, 0.0f, dv, c.act, ld, H, tt, hd, hd);           // dV = P^T dO
    gemm(c, false, true, T, T, hd, 1.0f, dO, d, v, ld, 0.0f, scratch, c.act, T, H, hd, hd, tt);      // dP = dO V^T
    k::causal_softmax_backward(c.stream, c.act, p, scratch, int64_t{H} * T, T);                      // dS
    gemm(c, false, false, T, hd, T, scale, scratch, T, kk, ld, 0.0f, dq, c.act, ld, H, tt, hd, hd);  // dQ = dS K
    gemm(c, true, false, T, hd, T, scale, scratch, T, q, ld, 0.0f, dk, c.act, ld, H, tt, hd, hd);    // dK = dS^T Q
  }
}

void embedding_forward(const Ctx& c, const int* tokens, const void* wte, const void* wpe, void* x, int B, int T,
                       int d) {
  k::embedding(c.stream, c.act, tokens, wte, wpe, x, B, T, d);
}

void embedding_backward(const Ctx& c, const int* tokens, const void* dx, void* dwte, void* dwpe, float* scratch, int B,
                        int T, int d, int V) {
  k::embedding_backward(c.stream, c.act, c.grad, tokens, dx, dwte, dwpe, scratch, B, T, d, V);
}

void head_loss(const Ctx& c, const void* x, const void* wte, const int* targets, void* logits, float* row_loss,
               float* loss, void* dx, void* dwte, int n, int d, int V) {
  gemm(c, false, true, n, V, d, 1.0f, x, d, wte, d, 0.0f, logits, c.act, V);
  k::cross_entropy(c.stream, c.act, logits, targets, n, V, row_loss, loss, dx != nullptr);
  if (!dx) return;
  gemm(c, false, false, n, d, V, 1.0f, logits, V, wte, d, 0.0f, dx, c.act, d);
  gemm(c, true, false, V, d, n, 1.0f, logits, V, x, d, 1.0f, dwte, c.grad, d);
}

}  // namespace gpt::cuda
