// The GPT's CUDA kernels other than GEMMs (kernels.cu; fused attention: attention_fused.cu), composed into
// layers by layers.cpp. Each computes in f32 and stores activations in `act` (f32 or bf16) and parameter
// gradients in `grad` (f32 or bf16), on `s`. Launch errors are checked.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/dtype.h"

namespace gpt::cuda::k {

using zs::DType;

// y[r, c] += b[c] (+ residual[r, c])
void add_bias(cudaStream_t s, DType act, void* y, const void* b, const void* residual, int rows, int cols);
// sum[c] += sum_r dy[r, c]; with x non-null also xhat_sum[c] += sum_r dy[r, c] (x[r, c] - mean[r]) rstd[r].
// Deterministic (fixed order); `scratch` holds column_sum_floats(rows, cols).
int64_t column_sum_floats(int rows, int cols);
void column_sums(cudaStream_t s, DType act, DType grad, const void* dy, const void* x, const float* mean,
                 const float* rstd, int rows, int cols, float* scratch, void* sum, void* xhat_sum);
void layernorm(cudaStream_t s, DType act, const void* x, const void* g, const void* b, void* y, float* mean,
               float* rstd, int rows, int d);
// dx (+= when accumulate); the gain and bias gradients are column_sums.
void layernorm_dx(cudaStream_t s, DType act, const void* x, const void* g, const float* mean, const float* rstd,
                  const void* dy, void* dx, int rows, int d, bool accumulate);
void gelu(cudaStream_t s, DType act, const void* x, void* y, int64_t n);
void gelu_backward(cudaStream_t s, DType act, const void* x, const void* dy, void* dx, int64_t n);
// In place on `rows` rows of length T, row r being query r % T: softmax over keys 0..r%T, zero after.
void causal_softmax(cudaStream_t s, DType act, void* p, int64_t rows, int T);
// ds = p (ds - rowsum(ds p)) over the same keys, zero after (in place on ds).
void causal_softmax_backward(cudaStream_t s, DType act, const void* p, void* ds, int64_t rows, int T);
// Causal self-attention of bf16 qkv [B*T, 3d] into out [B*T, d] without the T x T probabilities (head size
// d / H of 16, 32, 64 or 128); lse (B*H*T floats) keeps each query's log-sum-exp for the backward.
void fused_attention(cudaStream_t s, const void* qkv, float* lse, void* out, int B, int T, int d, int H);
// dqkv (overwritten) from dout, with the forward's out and lse; delta: B*H*T floats of scratch.
void fused_attention_backward(cudaStream_t s, const void* qkv, const void* out, const float* lse, const void* dout,
                              void* dqkv, float* delta, int B, int T, int d, int H);
void embedding(cudaStream_t s, DType act, const int* tokens, const void* wte, const void* wpe, void* x, int B, int T,
               int d);
// dwte, dwpe +=; `scratch` (V*d floats) accumulates dwte first when grad is not f32.
void embedding_backward(cudaStream_t s, DType act, DType grad, const int* tokens, const void* dx, void* dwte,
                        void* dwpe, float* scratch, int B, int T, int d, int V);
// Per row: row_loss = logsumexp(logits) - logits[target]; with `gradient`, logits become
// (softmax - onehot) / rows. Then *mean = the mean of row_loss.
void cross_entropy(cudaStream_t s, DType act, void* logits, const int* targets, int rows, int V, float* row_loss,
                   float* mean, bool gradient);

}  // namespace gpt::cuda::k
