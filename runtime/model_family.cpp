// Model family shapes.
#include "runtime/model_family.h"

#include <charconv>
#include <sstream>

#include "core/error.h"

namespace zs::family {

std::vector<TensorSpec> gpt_block(int d) {
  const int64_t D = d;
  auto w = [](const char* n, Shape s) { return TensorSpec{n, s, true, true}; };
  auto v = [](const char* n, Shape s) { return TensorSpec{n, s, true, false}; };  // no weight decay
  return {v("ln1.g", {D}),          v("ln1.b", {D}),       w("attn.qkv.w", {3 * D, D}), v("attn.qkv.b", {3 * D}),
          w("attn.proj.w", {D, D}), v("attn.proj.b", {D}), v("ln2.g", {D}),             v("ln2.b", {D}),
          w("mlp.fc.w", {4 * D, D}), v("mlp.fc.b", {4 * D}), w("mlp.proj.w", {D, 4 * D}), v("mlp.proj.b", {D})};
}

std::vector<TensorSpec> gpt_embed(const Gpt& g) {
  return {{"wte", {g.vocab, g.d}, true, true}, {"wpe", {g.seq, g.d}, true, true}};
}

std::vector<TensorSpec> gpt_ln_f(int d) {
  return {{"g", {d}, true, false}, {"b", {d}, true, false}};
}

Units gpt_units(const Gpt& g) {
  Units u{{"embed", gpt_embed(g)}};
  for (int l = 0; l < g.layers; ++l) u.emplace_back("h." + std::to_string(l), gpt_block(g.d));
  u.emplace_back("ln_f", gpt_ln_f(g.d));
  return u;
}

Gpt parse_gpt(const std::string& spec) {
  Gpt g;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    ZS_CHECK(eq != std::string::npos, "gpt model '{}': '{}' is not key=value (keys d, L, V, T, H)", spec, item);
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    int v = 0;
    const auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
    ZS_CHECK(ec == std::errc() && end == val.data() + val.size() && v > 0,
             "gpt model '{}': {} = '{}' is not a positive integer", spec, key, val);
    if (key == "d") g.d = v;
    else if (key == "L") g.layers = v;
    else if (key == "V") g.vocab = v;
    else if (key == "T") g.seq = v;
    else if (key == "H") g.heads = v;
    else ZS_FAIL("gpt model '{}': unknown key '{}' (keys d, L, V, T, H)", spec, key);
  }
  ZS_CHECK(g.d % g.heads == 0, "gpt model '{}': d = {} is not a multiple of H = {}", spec, g.d, g.heads);
  return g;
}

}  // namespace zs::family
