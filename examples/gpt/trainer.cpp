// One step of the GPT through the engine: embed, blocks, final norm and tied head with the loss, then the
// backward in reverse, each unit's reduce-scatter issued as soon as its gradients are complete.
#include "examples/gpt/trainer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "sharding/init.h"

namespace gpt {
namespace {

Ptrs params(const zs::GatheredParams& g, int count) {
  Ptrs p{};
  for (int i = 0; i < count; ++i) p[static_cast<std::size_t>(i)] = g.tensor(i).data;
  return p;
}

std::unique_ptr<Backend> make_backend(zs::Engine& e, const Shape& s, int batch, bool recompute) {
  const auto& p = e.config().precision;
  if (e.device().is_cpu()) {
    ZS_CHECK(p.param == zs::DType::f32 && p.reduce == zs::DType::f32,
             "the GPT example computes on the CPU in f32: set precision.param and precision.reduce to f32");
    return make_cpu_backend(s, batch, recompute);
  }
#ifdef ZS_GPT_CUDA
  return make_cuda_backend(s, batch, e, recompute);
#else
  ZS_FAIL("the GPT example was built without CUDA: set device: cpu");
#endif
}

}  // namespace

Trainer::Trainer(zs::Engine& engine, const Shape& shape, int batch, bool checkpoint_activations)
    : e_(engine), s_(shape), batch_(batch) {
  ZS_CHECK(s_.d % s_.heads == 0, "d_model {} is not a multiple of heads {}", s_.d, s_.heads);
  const bool cpu = engine.device().is_cpu();
  const zs::DType compute = engine.config().precision.param;
  // Fused attention where it can run (automatic) or as asked; asked for where it cannot, the reason.
  const std::string unfit = zs::family::gpt_fused_attention_unfit(batch, s_.d, s_.heads, cpu, compute);
  ZS_CHECK(s_.attention != zs::family::Attention::fused || unfit.empty(), "{}", unfit);
  if (s_.attention == zs::family::Attention::automatic)
    s_.attention = unfit.empty() ? zs::family::Attention::fused : zs::family::Attention::plain;
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
  math_ = make_backend(engine, s_, batch, checkpoint_activations);
  // The CUDA layers' buffers are the ledger's `activations`, to the byte (the CPU's are plain vectors).
  if (!cpu)
    engine.declare_activations(zs::family::gpt_activation_bytes(
                                   s_, batch, false, compute, engine.config().precision.reduce, checkpoint_activations),
                               zs::family::gpt_activation_host_bytes(s_, batch, false));
}

double Trainer::run(const int* tokens, const int* targets, bool backward) {
  auto grads = [&](zs::UnitId u, int count) {
    Ptrs g{};
    for (int i = 0; i < count; ++i) g[static_cast<std::size_t>(i)] = e_.grads(u, i).data;
    return g;
  };
  math_->set_batch(tokens, targets);
  math_->embed_forward(params(e_.gather(embed_), 2));
  for (int l = 0; l < s_.layers; ++l)
    math_->block_forward(l, params(e_.gather(blocks_[static_cast<std::size_t>(l)]), kBlockTensors));
  {
    auto ge = e_.gather(embed_);  // the tied head
    auto gf = e_.gather(ln_f_);
    if (!backward) {
      math_->head(params(ge, 2), params(gf, 2), nullptr, nullptr);
      return math_->loss();
    }
    const Ptrs de = grads(embed_, 2), df = grads(ln_f_, 2);
    math_->head(params(ge, 2), params(gf, 2), &de, &df);
  }
  e_.reduce_grads(ln_f_);
  for (int l = s_.layers - 1; l >= 0; --l) {
    const zs::UnitId u = blocks_[static_cast<std::size_t>(l)];
    math_->block_backward(l, params(e_.gather(u), kBlockTensors), grads(u, kBlockTensors));
    e_.reduce_grads(u);
  }
  math_->embed_backward(grads(embed_, 2));  // needs the tokens, not the parameters: no gather
  e_.reduce_grads(embed_);
  return math_->loss();
}

std::string Trainer::generate(const std::string& prompt, int count, uint64_t seed) {
  // Runs the batched forward with row 0 holding the text's last `seq` bytes; the other rows are idle.
  std::string text = prompt;
  std::vector<int> tokens(static_cast<std::size_t>(batch_) * s_.seq, ' '), targets(tokens.size(), 0);
  for (int k = 0; k < count; ++k) {
    const int len = std::min<int>(static_cast<int>(text.size()), s_.seq);
    for (int t = 0; t < s_.seq; ++t)
      tokens[static_cast<std::size_t>(t)] =
          t < len
              ? static_cast<uint8_t>(text[text.size() - static_cast<std::size_t>(len) + static_cast<std::size_t>(t)])
              : ' ';
    loss(tokens.data(), targets.data());
    // Sample at temperature 0.8 with a counter-based draw: every rank picks the same byte.
    const std::vector<float> row = math_->logits_row(len - 1);
    const float mx = *std::max_element(row.begin(), row.end());
    std::vector<double> p(static_cast<std::size_t>(s_.vocab));
    double sum = 0;
    for (int j = 0; j < s_.vocab; ++j)
      sum += p[static_cast<std::size_t>(j)] = std::exp((row[static_cast<std::size_t>(j)] - mx) / 0.8);
    double u = static_cast<double>(zs::init::counter_hash(seed, 0, static_cast<uint64_t>(k)) >> 11) * 0x1p-53 * sum;
    int pick = 0;
    while (pick + 1 < s_.vocab && (u -= p[static_cast<std::size_t>(pick)]) > 0) ++pick;
    text += static_cast<char>(pick);
  }
  return text.substr(prompt.size());
}

}  // namespace gpt
