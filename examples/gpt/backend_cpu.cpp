// The GPT on the CPU: model.h's float layers with BLAS, f32 parameters and gradients.
#include <cmath>

#include "examples/gpt/backend.h"

namespace gpt {
namespace {

template <typename T, std::size_t N>
std::array<T*, N> cast(const Ptrs& p) {
  std::array<T*, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<T*>(p[i]);
  return out;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Shape& s, int batch, bool recompute) : s_(s), batch_(batch), recompute_(recompute) {
    const std::size_t n = static_cast<std::size_t>(batch) * s_.seq, d = static_cast<std::size_t>(s_.d);
    acts_.assign(static_cast<std::size_t>(s_.layers) + 1, std::vector<float>(n * d));
    caches_.resize(recompute ? 1 : static_cast<std::size_t>(s_.layers));
    for (auto& c : caches_) c.resize(batch, s_.seq, s_.d, s_.heads);
    scratch_.resize(batch, s_.seq, s_.d);
    for (auto* v : {&xf_, &dx_, &dx2_}) v->resize(n * d);
    mean_.resize(n);
    rstd_.resize(n);
    logits_.resize(n * static_cast<std::size_t>(s_.vocab));
  }

  void set_batch(const int* tokens, const int* targets) override {
    tokens_ = tokens;
    targets_ = targets;
  }

  void embed_forward(const Ptrs& embed) override {
    const auto p = cast<const float, 2>(embed);
    embedding_forward(tokens_, p[0], p[1], acts_[0].data(), batch_, s_.seq, s_.d);
  }

  void block_forward(int l, const Ptrs& block) override {
    const std::size_t i = static_cast<std::size_t>(l);
    gpt::block_forward(cast<const float, kBlockTensors>(block), acts_[i].data(), acts_[i + 1].data(), cache(l), batch_,
                       s_.seq, s_.d, s_.heads);
  }

  void head(const Ptrs& embed, const Ptrs& ln_f, const Ptrs* d_embed, const Ptrs* d_ln_f) override {
    const int n = batch_ * s_.seq, d = s_.d;
    const auto wte = static_cast<const float*>(embed[0]);
    const auto f = cast<const float, 2>(ln_f);
    const float* x = acts_.back().data();
    layernorm_forward(x, f[0], f[1], xf_.data(), mean_.data(), rstd_.data(), n, d);
    if (!d_embed) {
      loss_ = head_loss(xf_.data(), wte, targets_, logits_.data(), static_cast<float*>(nullptr),
                        static_cast<float*>(nullptr), n, d, s_.vocab);
      return;
    }
    const auto df = cast<float, 2>(*d_ln_f);
    loss_ = head_loss(xf_.data(), wte, targets_, logits_.data(), dx2_.data(), static_cast<float*>((*d_embed)[0]), n, d,
                      s_.vocab);
    layernorm_backward(x, f[0], mean_.data(), rstd_.data(), dx2_.data(), dx_.data(), df[0], df[1], n, d, false);
  }

  void block_backward(int l, const Ptrs& block, const Ptrs& d_block) override {
    if (recompute_) block_forward(l, block);  // the block's internals again, from its kept input
    gpt::block_backward(cast<const float, kBlockTensors>(block), cast<float, kBlockTensors>(d_block), cache(l),
                        dx_.data(), dx2_.data(), scratch_, batch_, s_.seq, s_.d, s_.heads);
    std::swap(dx_, dx2_);
  }

  void embed_backward(const Ptrs& d_embed) override {
    const auto g = cast<float, 2>(d_embed);
    embedding_backward(tokens_, dx_.data(), g[0], g[1], batch_, s_.seq, s_.d);
  }

  double loss() override { return loss_; }

  std::vector<float> logits_row(int row) override {
    const auto first = logits_.begin() + static_cast<std::ptrdiff_t>(row) * s_.vocab;
    return {first, first + s_.vocab};
  }

 private:
  BlockCache<float>& cache(int l) { return caches_[recompute_ ? 0 : static_cast<std::size_t>(l)]; }

  Shape s_;
  int batch_;
  bool recompute_;
  const int *tokens_ = nullptr, *targets_ = nullptr;
  std::vector<std::vector<float>> acts_;   // the residual stream entering each block, and leaving the last
  std::vector<BlockCache<float>> caches_;  // per block, or one (recompute)
  BlockScratch<float> scratch_;
  std::vector<float> xf_, mean_, rstd_, logits_, dx_, dx2_;
  double loss_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const Shape& s, int batch, bool recompute) {
  return std::make_unique<CpuBackend>(s, batch, recompute);
}

}  // namespace gpt
