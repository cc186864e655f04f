// The GPT's tensors, their initialisation and size.
#include "examples/gpt/model.h"

#include <cmath>

namespace gpt {

std::vector<zs::TensorSpec> block_specs(int d) {
  const int64_t D = d;
  auto w = [](const char* n, zs::Shape s) { return zs::TensorSpec{n, s, true, true}; };
  auto v = [](const char* n, zs::Shape s) { return zs::TensorSpec{n, s, true, false}; };  // no weight decay
  return {v("ln1.g", {D}),         v("ln1.b", {D}),     w("attn.qkv.w", {3 * D, D}), v("attn.qkv.b", {3 * D}),
          w("attn.proj.w", {D, D}), v("attn.proj.b", {D}), v("ln2.g", {D}),             v("ln2.b", {D}),
          w("mlp.fc.w", {4 * D, D}), v("mlp.fc.b", {4 * D}), w("mlp.proj.w", {D, 4 * D}), v("mlp.proj.b", {D})};
}

std::vector<zs::TensorSpec> embed_specs(const Shape& s) {
  return {{"wte", {s.vocab, s.d}, true, true}, {"wpe", {s.seq, s.d}, true, true}};
}

std::vector<zs::TensorSpec> ln_f_specs(int d) {
  return {{"g", {d}, true, false}, {"b", {d}, true, false}};
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
