// The GPT's CUDA layers: cuBLAS GEMMs around the kernels of kernels.cu, in the order of model.h's CPU
// layers, so each is checked against its CPU twin (tests/gpu/test_gpt_cuda.cpp).
#include "examples/gpt/cuda/layers.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "examples/gpt/cuda/kernels.h"
#include "runtime/model_family.h"

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
// v thirds of qkv's rows (stride hd between heads), its probabilities a T x T matrix (stride T*T). Byte
// offsets of sequence b's parts, in the activation dtype:
namespace {
struct Attention {
  int T, d, H, hd, ld;
  int64_t es, tt;
  float scale;
  Attention(const Ctx& c, int T_, int d_, int H_)
      : T(T_),
        d(d_),
        H(H_),
        hd(d_ / H_),
        ld(3 * d_),
        es(static_cast<int64_t>(zs::dtype_size(c.act))),
        tt(int64_t{T_} * T_),
        scale(1.0f / std::sqrt(static_cast<float>(d_ / H_))) {}
  int64_t qkv(int b, int third) const { return (int64_t{b} * T * ld + int64_t{third} * d) * es; }  // q, k, v
  int64_t probs(int b) const { return int64_t{b} * H * tt * es; }
  int64_t out(int b) const { return int64_t{b} * T * d * es; }
};

const char* at(const void* p, int64_t bytes) {
  return static_cast<const char*>(p) + bytes;
}
char* at(void* p, int64_t bytes) {
  return static_cast<char*>(p) + bytes;
}
}  // namespace

void attention_probs(const Ctx& c, const void* qkv, void* probs, int B, int T, int d, int H) {
  const Attention a(c, T, d, H);
  for (int b = 0; b < B; ++b)
    gemm(c, false, true, T, T, a.hd, a.scale, at(qkv, a.qkv(b, 0)), a.ld, at(qkv, a.qkv(b, 1)), a.ld, 0.0f,
         at(probs, a.probs(b)), c.act, T, H, a.hd, a.hd, a.tt);
  k::causal_softmax(c.stream, c.act, probs, int64_t{B} * H * T, T);
}

void attention_forward(const Ctx& c, const void* qkv, void* probs, void* out, int B, int T, int d, int H) {
  const Attention a(c, T, d, H);
  attention_probs(c, qkv, probs, B, T, d, H);
  for (int b = 0; b < B; ++b)  // out = P V
    gemm(c, false, false, T, a.hd, T, 1.0f, at(probs, a.probs(b)), T, at(qkv, a.qkv(b, 2)), a.ld, 0.0f,
         at(out, a.out(b)), c.act, d, H, a.tt, a.hd, a.hd);
}

void attention_backward(const Ctx& c, const void* qkv, const void* probs, const void* dout, void* dqkv, void* scratch,
                        int B, int T, int d, int H) {
  const Attention a(c, T, d, H);
  const int hd = a.hd, ld = a.ld;
  const int64_t tt = a.tt;
  for (int b = 0; b < B; ++b) {
    const char *q = at(qkv, a.qkv(b, 0)), *kk = at(qkv, a.qkv(b, 1)), *v = at(qkv, a.qkv(b, 2));
    char *dq = at(dqkv, a.qkv(b, 0)), *dk = at(dqkv, a.qkv(b, 1)), *dv = at(dqkv, a.qkv(b, 2));
    const char *p = at(probs, a.probs(b)), *dO = at(dout, a.out(b));
    gemm(c, true, false, T, hd, T, 1.0f, p, T, dO, d, 0.0f, dv, c.act, ld, H, tt, hd, hd);             // dV = P^T dO
    gemm(c, false, true, T, T, hd, 1.0f, dO, d, v, ld, 0.0f, scratch, c.act, T, H, hd, hd, tt);        // dP = dO V^T
    k::causal_softmax_backward(c.stream, c.act, p, scratch, int64_t{H} * T, T);                        // dS
    gemm(c, false, false, T, hd, T, a.scale, scratch, T, kk, ld, 0.0f, dq, c.act, ld, H, tt, hd, hd);  // dQ = dS K
    gemm(c, true, false, T, hd, T, a.scale, scratch, T, q, ld, 0.0f, dk, c.act, ld, H, tt, hd, hd);    // dK = dS^T Q
  }
}

void check_fused_attention(const Ctx& c, int B, int d, int H) {
  const std::string why = zs::family::gpt_fused_attention_unfit(B, d, H, false, c.act);
  ZS_CHECK(why.empty(), "{}", why);
}

void fused_attention_forward(const Ctx& c, const void* qkv, float* lse, void* out, int B, int T, int d, int H) {
  check_fused_attention(c, B, d, H);
  k::fused_attention(c.stream, qkv, lse, out, B, T, d, H);
}

void fused_attention_backward(const Ctx& c, const void* qkv, const void* out, const float* lse, const void* dout,
                              void* dqkv, float* delta, int B, int T, int d, int H) {
  check_fused_attention(c, B, d, H);
  k::fused_attention_backward(c.stream, qkv, out, lse, dout, dqkv, delta, B, T, d, H);
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
