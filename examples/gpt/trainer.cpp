// One step of the GPT through the engine: embed, blocks, final norm and tied head with the loss, then the
// backward in reverse, each unit's reduce-scatter issued as soon as its gradients are complete.
#include "examples/gpt/trainer.h"

#include <cmath>

#include "core/error.h"
#include "sharding/init.h"

namespace gpt {
namespace {

const float* param(const zs::GatheredParams& g, int i) {
  return static_cast<const float*>(g.tensor(i).data);
}

}  // namespace

Trainer::Trainer(zs::Engine& engine, const Shape& shape, int batch) : e_(engine), s_(shape), batch_(batch) {
  const auto& p = engine.config().precision;
  ZS_CHECK(engine.device().is_cpu() && p.param == zs::DType::f32 && p.reduce == zs::DType::f32,
           "the GPT example computes on the CPU in f32: set device: cpu and precision.param/reduce: f32");
  ZS_CHECK(s_.d % s_.heads == 0, "d_model {} is not a multiple of heads {}", s_.d, s_.heads);
  // The family's units in order: embed, h.0 .. h.{L-1}, ln_f.
  for (auto& [name, tensors] : zs::family::gpt_units(s_)) {
    const zs::UnitId u = engine.add_unit(name, std::move(tensors));
    if (name == "embed")
      embed_ = u;
    else if (name == "ln_f")
      ln_f_ = u;
    else
      blocks_.push_back(u);
  }
  const std::size_t n = static_cast<std::size_t>(batch) * s_.seq, d = static_cast<std::size_t>(s_.d);
  acts_.assign(static_cast<std::size_t>(s_.layers) + 1, std::vector<float>(n * d));
  caches_.resize(static_cast<std::size_t>(s_.layers));
  for (auto& c : caches_) c.resize(batch, s_.seq, s_.d, s_.heads);
  scratch_.resize(batch, s_.seq, s_.d);
  for (auto* v : {&xf_, &dx_, &dx2_}) v->resize(n * d);
  mean_.resize(n);
  rstd_.resize(n);
  logits_.resize(n * static_cast<std::size_t>(s_.vocab));
}

double Trainer::run(const int* tokens, const int* targets, bool backward) {
  const int B = batch_, T = s_.seq, d = s_.d, H = s_.heads, V = s_.vocab, n = B * T, L = s_.layers;
  auto grad = [&](zs::UnitId u, int i) { return static_cast<float*>(e_.grads(u, i).data); };
  {
    auto g = e_.gather(embed_);
    embedding_forward(tokens, param(g, 0), param(g, 1), acts_[0].data(), B, T, d);
  }
  for (int l = 0; l < L; ++l) {
    auto g = e_.gather(blocks_[static_cast<std::size_t>(l)]);
    BlockPtrs<const float> p{};
    for (int i = 0; i < kBlockTensors; ++i) p[static_cast<std::size_t>(i)] = param(g, i);
    block_forward(p, acts_[static_cast<std::size_t>(l)].data(), acts_[static_cast<std::size_t>(l) + 1].data(),
                  caches_[static_cast<std::size_t>(l)], B, T, d, H);
  }
  double loss = 0;
  {
    auto ge = e_.gather(embed_);  // the tied head
    auto gf = e_.gather(ln_f_);
    const float* x = acts_[static_cast<std::size_t>(L)].data();
    layernorm_forward(x, param(gf, 0), param(gf, 1), xf_.data(), mean_.data(), rstd_.data(), n, d);
    if (!backward) return head_loss(xf_.data(), param(ge, 0), targets, logits_.data(), static_cast<float*>(nullptr),
                                    static_cast<float*>(nullptr), n, d, V);
    loss = head_loss(xf_.data(), param(ge, 0), targets, logits_.data(), dx2_.data(), grad(embed_, 0), n, d, V);
    layernorm_backward(x, param(gf, 0), mean_.data(), rstd_.data(), dx2_.data(), dx_.data(), grad(ln_f_, 0),
                       grad(ln_f_, 1), n, d, false);
  }
  e_.reduce_grads(ln_f_);
  for (int l = L - 1; l >= 0; --l) {
    const zs::UnitId u = blocks_[static_cast<std::size_t>(l)];
    {
      auto g = e_.gather(u);
      BlockPtrs<const float> p{};
      BlockPtrs<float> gp{};
      for (int i = 0; i < kBlockTensors; ++i) {
        p[static_cast<std::size_t>(i)] = param(g, i);
        gp[static_cast<std::size_t>(i)] = grad(u, i);
      }
      block_backward(p, gp, caches_[static_cast<std::size_t>(l)], dx_.data(), dx2_.data(), scratch_, B, T, d, H);
      std::swap(dx_, dx2_);
    }
    e_.reduce_grads(u);
  }
  {
    auto g = e_.gather(embed_);
    embedding_backward(tokens, dx_.data(), grad(embed_, 0), grad(embed_, 1), B, T, d);
  }
  e_.reduce_grads(embed_);
  return loss;
}

std::string Trainer::generate(const std::string& prompt, int count, uint64_t seed) {
  // Runs the batched forward with row 0 holding the text's last `seq` bytes; the other rows are idle.
  std::string text = prompt;
  std::vector<int> tokens(static_cast<std::size_t>(batch_) * s_.seq, ' '), targets(tokens.size(), 0);
  for (int k = 0; k < count; ++k) {
    const int len = std::min<int>(static_cast<int>(text.size()), s_.seq);
    for (int t = 0; t < s_.seq; ++t)
      tokens[static_cast<std::size_t>(t)] =
          t < len ? static_cast<uint8_t>(text[text.size() - static_cast<std::size_t>(len) + static_cast<std::size_t>(t)])
                  : ' ';
    loss(tokens.data(), targets.data());
    // Sample at temperature 0.8 with a counter-based draw: every rank picks the same byte.
    const float* row = logits_.data() + static_cast<std::size_t>(len - 1) * static_cast<std::size_t>(s_.vocab);
    const float mx = *std::max_element(row, row + s_.vocab);
    std::vector<double> p(static_cast<std::size_t>(s_.vocab));
    double sum = 0;
    for (int j = 0; j < s_.vocab; ++j) sum += p[static_cast<std::size_t>(j)] = std::exp((row[j] - mx) / 0.8);
    double u = static_cast<double>(zs::init::counter_hash(seed, 0, static_cast<uint64_t>(k)) >> 11) * 0x1p-53 * sum;
    int pick = 0;
    while (pick + 1 < s_.vocab && (u -= p[static_cast<std::size_t>(pick)]) > 0) ++pick;
    text += static_cast<char>(pick);
  }
  return text.substr(prompt.size());
}

}  // namespace gpt
