// The GPT's tensors, their initialisation and size.
#include "examples/gpt/model.h"

#include <cmath>

namespace gpt {

std::vector<zs::TensorSpec> block_specs(int d) {
  return zs::family::gpt_block(d);
}

std::vector<zs::TensorSpec> embed_specs(const Shape& s) {
  return zs::family::gpt_embed(s);
}

std::vector<zs::TensorSpec> ln_f_specs(int d) {
  return zs::family::gpt_ln_f(d);
}

zs::init::Initializer init_rule(std::string_view name, const Shape& s, uint64_t seed) {
  auto ends = [&](std::string_view suffix) { return name.ends_with(suffix); };
  if (ends(".g")) return zs::init::ones();
  if (ends(".b")) return zs::init::zeros();
  if (ends("proj.w")) return zs::init::normal(0.02f / std::sqrt(2.0f * static_cast<float>(s.layers)), seed);
  return zs::init::normal(0.02f, seed);
}

int64_t parameter_count(const Shape& s) {
  const int64_t d = s.d;
  return (s.vocab + s.seq) * d + s.layers * (12 * d * d + 13 * d) + 2 * d;
}

}  // namespace gpt
