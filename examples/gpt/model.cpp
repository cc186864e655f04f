// The GPT's tensors, their initialisation and size.
#include "examples/gpt/model.h"

#include <cmath>

namespace gpt {

zs::init::Initializer init_rule(std::string_view name, const Shape& s, uint64_t seed) {
  auto ends = [&](std::string_view suffix) { return name.ends_with(suffix); };
  if (ends(".g")) return zs::init::ones();
  if (ends(".b")) return zs::init::zeros();
  if (ends("proj.w")) return zs::init::normal(0.02f / std::sqrt(2.0f * static_cast<float>(s.layers)), seed);
  return zs::init::normal(0.02f, seed);
}

int64_t parameter_count(const Shape& s) {
  int64_t n = 0;
  for (const auto& [name, tensors] : zs::family::gpt_units(s))
    for (const auto& t : tensors) n += t.shape.numel();
  return n;
}

}  // namespace gpt
