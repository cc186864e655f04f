// The GPT on CUDA: cuda/layers.h on the engine's compute stream, so a gathered unit is ready for the
// kernels that read it and reduce_grads takes the gradients they wrote. The activations are allocated once
// here (ledger category `activations`); the step allocates nothing and the host waits only for the loss,
// after the backward is enqueued.
//
// Kept per block for its backward (n = batch * seq tokens, in the activation dtype): qkv (3 n d), the
// attention's output (n d), the residual after attention (n d) and the MLP's pre-activation (4 n d), plus
// the residual stream (n d per block boundary) and per-row norm statistics. Recomputed in backward instead
// of kept: the two layer norms' outputs (from their inputs, which are kept anyway: 2 n d per block, 1.5 GiB
// of a 1.3 B model at batch 8, for two elementwise passes), GELU's output, and the attention probabilities
// (plain attention: batch * heads * seq^2 values, one buffer for all blocks; recomputing costs one Q K^T
// GEMM per block, about 1.5 % of a 1.3 B model's step, and saves 256 MiB per block there). With activation
// checkpointing one block's set serves every block: block_backward runs the block's forward again first.
// With fused attention (Shape::attention, bf16) there are no probabilities: each block keeps its
// queries' log-sum-exps (batch * heads * seq floats) and the backward recomputes scores tile by tile.
#include <cuda_runtime.h>

#include <cstring>

#include "core/buffer.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "examples/gpt/backend.h"
#include "examples/gpt/cuda/layers.h"

namespace gpt {
namespace {

using zs::Buffer;
using zs::DType;

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Shape& s, int batch, zs::Engine& e, bool recompute)
      : s_(s), batch_(batch), recompute_(recompute), dev_(e.device()) {
    const auto& p = e.config().precision;
    ZS_CHECK((p.param == DType::f32 && p.reduce == DType::f32) || (p.param == DType::bf16 && p.reduce != DType::f16),
             "the GPT example on CUDA computes in f32 (precision.param and precision.reduce f32) or bf16 "
             "(precision.param bf16, precision.reduce f32 or bf16), not param {} with reduce {}",
             zs::dtype_name(p.param), zs::dtype_name(p.reduce));
    c_.act = p.param;
    c_.grad = p.reduce;
    c_.stream = static_cast<cudaStream_t>(e.compute_stream().native_handle());
    const cublasStatus_t st = cublasCreate(&c_.blas);
    ZS_CHECK(st == CUBLAS_STATUS_SUCCESS, "cublasCreate failed: {}", cublasGetStatusString(st));
    cublasSetStream(c_.blas, c_.stream);
    ZS_CHECK_CUDA(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming));
    ZS_CHECK_CUDA(cudaEventCreateWithFlags(&loss_ready_, cudaEventDisableTiming));

    const int64_t n = int64_t{batch} * s_.seq, d = s_.d, L = s_.layers;
    const int64_t probs = int64_t{batch} * s_.heads * s_.seq * s_.seq, rows_heads = int64_t{batch} * s_.heads * s_.seq;
    auto act = [&](int64_t elements) { return alloc(elements * static_cast<int64_t>(zs::dtype_size(c_.act))); };
    auto floats = [&](int64_t count) { return alloc(count * 4); };
    for (int64_t l = 0; l <= L; ++l) stream_.push_back(act(n * d));
    blocks_.resize(recompute ? 1 : static_cast<std::size_t>(L));
    for (auto& b : blocks_) {
      b.qkv = act(3 * n * d), b.att = act(n * d), b.x1 = act(n * d);
      b.h = act(4 * n * d), b.stats = floats(4 * n);
      if (fused()) b.lse = floats(rows_heads);
    }
    ln_ = act(n * d), hg_ = act(4 * n * d), d_hg_ = act(4 * n * d), d_ln_ = act(n * d), d_x1_ = act(n * d),
    d_att_ = act(n * d);
    d_qkv_ = act(3 * n * d);
    if (fused())
      delta_ = floats(rows_heads);
    else
      probs_ = act(probs), d_probs_ = act(int64_t{s_.heads} * s_.seq * s_.seq);
    dres_ = act(n * d), dres2_ = act(n * d), xf_ = act(n * d), logits_ = act(n * s_.vocab);
    head_stats_ = floats(2 * n), row_loss_ = floats(n), loss_ = floats(1);
    colsum_ = floats(cuda::column_sum_scratch(static_cast<int>(n), static_cast<int>(4 * d)));
    c_.colsum = static_cast<float*>(colsum_.data());
    if (c_.grad != DType::f32) table_ = floats(int64_t{s_.vocab} * d);
    batch_dev_ = alloc(2 * n * 4);
    batch_host_ = Buffer(static_cast<std::size_t>(2 * n * 4 + 4), zs::MemoryKind::pinned, zs::Device::cpu(),
                         zs::MemCategory::activations);
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(c_.stream);
    cudaEventDestroy(uploaded_);
    cudaEventDestroy(loss_ready_);
    cublasDestroy(c_.blas);
  }

  void set_batch(const int* tokens, const int* targets) override {
    const std::size_t n = static_cast<std::size_t>(batch_) * static_cast<std::size_t>(s_.seq);
    ZS_CHECK_CUDA(cudaEventSynchronize(uploaded_));  // the previous batch has left the staging buffer
    auto* host = static_cast<int*>(batch_host_.data());
    std::memcpy(host, tokens, n * 4);
    std::memcpy(host + n, targets, n * 4);
    ZS_CHECK_CUDA(cudaMemcpyAsync(batch_dev_.data(), host, 2 * n * 4, cudaMemcpyHostToDevice, c_.stream));
    ZS_CHECK_CUDA(cudaEventRecord(uploaded_, c_.stream));
  }

  void embed_forward(const Ptrs& embed) override {
    cuda::embedding_forward(c_, tokens(), embed[0], embed[1], stream_[0].data(), batch_, s_.seq, s_.d);
  }

  void block_forward(int l, const Ptrs& p) override {
    const int n = rows(), d = s_.d;
    Block& b = block(l);
    const void* x = stream_[static_cast<std::size_t>(l)].data();
    void* y = stream_[static_cast<std::size_t>(l) + 1].data();
    float* st = static_cast<float*>(b.stats.data());  // ln1 mean, rstd, ln2 mean, rstd
    cuda::layernorm_forward(c_, x, p[LN1_G], p[LN1_B], ln_.data(), st, st + n, n, d);
    cuda::linear_forward(c_, ln_.data(), p[QKV_W], p[QKV_B], b.qkv.data(), n, d, 3 * d);
    if (fused())
      cuda::fused_attention_forward(c_, b.qkv.data(), lse(b), b.att.data(), batch_, s_.seq, d, s_.heads);
    else
      cuda::attention_forward(c_, b.qkv.data(), probs_.data(), b.att.data(), batch_, s_.seq, d, s_.heads);
    cuda::linear_forward(c_, b.att.data(), p[PROJ_W], p[PROJ_B], b.x1.data(), n, d, d, x);
    cuda::layernorm_forward(c_, b.x1.data(), p[LN2_G], p[LN2_B], ln_.data(), st + 2 * n, st + 3 * n, n, d);
    cuda::linear_forward(c_, ln_.data(), p[FC_W], p[FC_B], b.h.data(), n, d, 4 * d);
    cuda::gelu_forward(c_, b.h.data(), hg_.data(), int64_t{n} * 4 * d);
    cuda::linear_forward(c_, hg_.data(), p[FC2_W], p[FC2_B], y, n, 4 * d, d, b.x1.data());
  }

  void head(const Ptrs& embed, const Ptrs& ln_f, const Ptrs* d_embed, const Ptrs* d_ln_f) override {
    const int n = rows(), d = s_.d;
    const void* x = stream_.back().data();
    float* st = static_cast<float*>(head_stats_.data());
    cuda::layernorm_forward(c_, x, ln_f[0], ln_f[1], xf_.data(), st, st + n, n, d);
    cuda::head_loss(c_, xf_.data(), embed[0], targets(), logits_.data(), static_cast<float*>(row_loss_.data()),
                    static_cast<float*>(loss_.data()), d_embed ? d_res2() : nullptr, d_embed ? (*d_embed)[0] : nullptr,
                    n, d, s_.vocab);
    ZS_CHECK_CUDA(cudaMemcpyAsync(loss_host(), loss_.data(), 4, cudaMemcpyDeviceToHost, c_.stream));
    ZS_CHECK_CUDA(cudaEventRecord(loss_ready_, c_.stream));
    if (!d_embed) return;
    cuda::layernorm_backward(c_, x, ln_f[0], st, st + n, d_res2(), dres_.data(), (*d_ln_f)[0], (*d_ln_f)[1], n, d,
                             false);
  }

  void block_backward(int l, const Ptrs& p, const Ptrs& g) override {
    if (recompute_) block_forward(l, p);  // the block's internals again, from its kept input
    const int n = rows(), d = s_.d;
    const int64_t nd = int64_t{n} * d, bytes = nd * static_cast<int64_t>(zs::dtype_size(c_.act));
    const Block& b = block(l);
    const void* x = stream_[static_cast<std::size_t>(l)].data();
    float* st = static_cast<float*>(b.stats.data());  // rewritten with the same values by the recomputed norms
    void *dy = dres_.data(), *dx = dres2_.data();
    cuda::gelu_forward(c_, b.h.data(), hg_.data(), 4 * nd);  // recomputed, not kept
    cuda::linear_backward(c_, hg_.data(), p[FC2_W], dy, d_hg_.data(), g[FC2_W], g[FC2_B], n, 4 * d, d);
    cuda::gelu_backward(c_, b.h.data(), d_hg_.data(), d_hg_.data(), 4 * nd);
    cuda::layernorm_forward(c_, b.x1.data(), p[LN2_G], p[LN2_B], ln_.data(), st + 2 * n, st + 3 * n, n, d);
    cuda::linear_backward(c_, ln_.data(), p[FC_W], d_hg_.data(), d_ln_.data(), g[FC_W], g[FC_B], n, d, 4 * d);
    copy(d_x1_.data(), dy, bytes);  // the residual
    cuda::layernorm_backward(c_, b.x1.data(), p[LN2_G], st + 2 * n, st + 3 * n, d_ln_.data(), d_x1_.data(), g[LN2_G],
                             g[LN2_B], n, d, true);
    cuda::linear_backward(c_, b.att.data(), p[PROJ_W], d_x1_.data(), d_att_.data(), g[PROJ_W], g[PROJ_B], n, d, d);
    if (fused()) {
      cuda::fused_attention_backward(c_, b.qkv.data(), b.att.data(), lse(b), d_att_.data(), d_qkv_.data(),
                                     static_cast<float*>(delta_.data()), batch_, s_.seq, d, s_.heads);
    } else {
      cuda::attention_probs(c_, b.qkv.data(), probs_.data(), batch_, s_.seq, d, s_.heads);  // recomputed
      cuda::attention_backward(c_, b.qkv.data(), probs_.data(), d_att_.data(), d_qkv_.data(), d_probs_.data(), batch_,
                               s_.seq, d, s_.heads);
    }
    cuda::layernorm_forward(c_, x, p[LN1_G], p[LN1_B], ln_.data(), st, st + n, n, d);  // recomputed
    cuda::linear_backward(c_, ln_.data(), p[QKV_W], d_qkv_.data(), d_ln_.data(), g[QKV_W], g[QKV_B], n, d, 3 * d);
    copy(dx, d_x1_.data(), bytes);
    cuda::layernorm_backward(c_, x, p[LN1_G], st, st + n, d_ln_.data(), dx, g[LN1_G], g[LN1_B], n, d, true);
    std::swap(dres_, dres2_);
  }

  void embed_backward(const Ptrs& g) override {
    cuda::embedding_backward(c_, tokens(), dres_.data(), g[0], g[1], static_cast<float*>(table_.data()), batch_, s_.seq,
                             s_.d, s_.vocab);
  }

  double loss() override {
    ZS_CHECK_CUDA(cudaEventSynchronize(loss_ready_));
    return *loss_host();
  }

  std::vector<float> logits_row(int row) override {
    const std::size_t es = zs::dtype_size(c_.act), V = static_cast<std::size_t>(s_.vocab);
    std::vector<char> raw(V * es);
    ZS_CHECK_CUDA(cudaMemcpyAsync(raw.data(),
                                  static_cast<const char*>(logits_.data()) + static_cast<std::size_t>(row) * V * es,
                                  V * es, cudaMemcpyDeviceToHost, c_.stream));
    ZS_CHECK_CUDA(cudaStreamSynchronize(c_.stream));
    std::vector<float> out(V);
    for (std::size_t j = 0; j < V; ++j) out[j] = zs::load_as_f32(raw.data(), c_.act, j);
    return out;
  }

 private:
  struct Block {
    Buffer qkv, att, x1, h, stats, lse;  // lse: fused attention's
  };
  static float* lse(const Block& b) { return static_cast<float*>(b.lse.data()); }
  // The trainer resolved automatic attention, and checked that fused attention fits.
  bool fused() const { return s_.attention == zs::family::Attention::fused; }
  Buffer alloc(int64_t bytes) {
    return Buffer(static_cast<std::size_t>(bytes), zs::MemoryKind::device, dev_, zs::MemCategory::activations);
  }
  int rows() const { return batch_ * s_.seq; }
  Block& block(int l) { return blocks_[recompute_ ? 0 : static_cast<std::size_t>(l)]; }
  const int* tokens() const { return static_cast<const int*>(batch_dev_.data()); }
  const int* targets() const { return tokens() + rows(); }
  // The pinned staging: the batch's tokens and targets (2 n ints), then the loss.
  float* loss_host() const { return reinterpret_cast<float*>(static_cast<int*>(batch_host_.data()) + 2 * rows()); }
  void* d_res2() { return dres2_.data(); }  // the head's gradient before its layer norm
  void copy(void* dst, const void* src, int64_t bytes) {
    ZS_CHECK_CUDA(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDeviceToDevice, c_.stream));
  }

  Shape s_;
  int batch_;
  bool recompute_;
  zs::Device dev_;
  cuda::Ctx c_;
  cudaEvent_t uploaded_ = nullptr, loss_ready_ = nullptr;
  std::vector<Buffer> stream_;  // the residual stream entering each block, and leaving the last
  std::vector<Block> blocks_;   // per block, or one (recompute)
  Buffer ln_, hg_, d_hg_, d_ln_, d_x1_, d_att_, d_qkv_, probs_, d_probs_, delta_, dres_, dres2_, xf_, logits_;
  Buffer head_stats_, row_loss_, loss_, colsum_, table_, batch_dev_, batch_host_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Shape& s, int batch, zs::Engine& engine, bool recompute) {
  return std::make_unique<CudaBackend>(s, batch, engine, recompute);
}

}  // namespace gpt
