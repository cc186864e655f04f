// The GPT's layers on CUDA: the twins of model.h's CPU layers (same formulas, same argument order), on
// device pointers, enqueued on one stream. GEMMs are cuBLAS with f32 accumulation; every other kernel
// computes in f32 and stores in the activation dtype `act` (f32 or bf16). Parameter gradients are added in
// the gradient dtype `grad` (f32, or bf16 with bf16 activations); activation gradients are in `act`.
// Every launch is checked.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace gpt::cuda {

struct Ctx {
  cublasHandle_t blas = nullptr;  // bound to `stream`
  cudaStream_t stream = nullptr;
  zs::DType act = zs::DType::f32, grad = zs::DType::f32;
  // f32 scratch for column sums (bias and norm gradients): column_sum_scratch(rows, cols) floats.
  float* colsum = nullptr;
};

int64_t column_sum_scratch(int rows, int cols);

// Row-major C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C; A and B in ctx.act, C in `c_type`; `batch`
// such products at strides sa, sb, sc (elements).
void gemm(const Ctx& c, bool ta, bool tb, int m, int n, int k, float alpha, const void* a, int lda, const void* b,
          int ldb, float beta, void* C, zs::DType c_type, int ldc, int batch = 1, int64_t sa = 0, int64_t sb = 0,
          int64_t sc = 0);

// y[n, out] = x W^T + b (+ residual when non-null)
void linear_forward(const Ctx& c, const void* x, const void* w, const void* b, void* y, int n, int in, int out,
                    const void* residual = nullptr);
// dx = dy W (overwrites; skipped when null), dW += dy^T x, db += colsum(dy)
void linear_backward(const Ctx& c, const void* x, const void* w, const void* dy, void* dx, void* dw, void* db, int n,
                     int in, int out);
// mean and rstd: n floats each.
void layernorm_forward(const Ctx& c, const void* x, const void* g, const void* b, void* y, float* mean, float* rstd,
                       int n, int d);
// dx (+= when accumulate) from dy; dg, db +=
void layernorm_backward(const Ctx& c, const void* x, const void* g, const float* mean, const float* rstd,
                        const void* dy, void* dx, void* dg, void* db, int n, int d, bool accumulate);
void gelu_forward(const Ctx& c, const void* x, void* y, int64_t n);
// dx may be dy (in place).
void gelu_backward(const Ctx& c, const void* x, const void* dy, void* dx, int64_t n);
// The attention probabilities probs [B, H, T, T] = causal softmax(Q K^T / sqrt(d/H)) of qkv [B*T, 3d].
void attention_probs(const Ctx& c, const void* qkv, void* probs, int B, int T, int d, int H);
// Causal self-attention over qkv into out [B*T, d]; probs as attention_probs leaves them (for backward).
void attention_forward(const Ctx& c, const void* qkv, void* probs, void* out, int B, int T, int d, int H);
// dqkv (overwritten) from dout; `scratch` holds H*T*T activation-dtype values.
void attention_backward(const Ctx& c, const void* qkv, const void* probs, const void* dout, void* dqkv, void* scratch,
                        int B, int T, int d, int H);
// The same attention without the probabilities (FlashAttention-style tiles; bf16, head size 16, 32, 64 or
// 128, batch x heads <= 65535, else check_fused_attention throws saying so): lse holds B*H*T floats from the forward
// for the backward, delta B*H*T floats of scratch.
void check_fused_attention(const Ctx& c, int B, int d, int H);
void fused_attention_forward(const Ctx& c, const void* qkv, float* lse, void* out, int B, int T, int d, int H);
void fused_attention_backward(const Ctx& c, const void* qkv, const void* out, const float* lse, const void* dout,
                              void* dqkv, float* delta, int B, int T, int d, int H);
// tokens: B*T ints on the device.
void embedding_forward(const Ctx& c, const int* tokens, const void* wte, const void* wpe, void* x, int B, int T, int d);
// dwte, dwpe +=. `scratch` (V*d floats) is used when the gradient dtype is not f32.
void embedding_backward(const Ctx& c, const int* tokens, const void* dx, void* dwte, void* dwpe, float* scratch, int B,
                        int T, int d, int V);
// The tied head and the loss: logits = x wte^T [n, V] (activation dtype); *loss (device) = the mean
// cross-entropy over the n rows, `row_loss` (n floats) its terms. With dx non-null also the gradient:
// dx = dlogits wte (overwritten), dwte += dlogits^T x; logits then hold dlogits.
void head_loss(const Ctx& c, const void* x, const void* wte, const int* targets, void* logits, float* row_loss,
               float* loss, void* dx, void* dwte, int n, int d, int V);

}  // namespace gpt::cuda
