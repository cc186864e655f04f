// Model family shapes.
#include "runtime/model_family.h"

#include <fmt/format.h>

#include <charconv>
#include <sstream>

#include "core/dtype.h"
#include "core/error.h"

namespace zs::family {

std::vector<TensorSpec> gpt_block(int d) {
  const int64_t D = d;
  auto w = [](const char* n, Shape s) { return TensorSpec{n, s, true, true}; };
  auto v = [](const char* n, Shape s) { return TensorSpec{n, s, true, false}; };  // no weight decay
  return {v("ln1.g", {D}),
          v("ln1.b", {D}),
          w("attn.qkv.w", {3 * D, D}),
          v("attn.qkv.b", {3 * D}),
          w("attn.proj.w", {D, D}),
          v("attn.proj.b", {D}),
          v("ln2.g", {D}),
          v("ln2.b", {D}),
          w("mlp.fc.w", {4 * D, D}),
          v("mlp.fc.b", {4 * D}),
          w("mlp.proj.w", {D, 4 * D}),
          v("mlp.proj.b", {D})};
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

std::string gpt_fused_attention_unfit(int batch, int d, int heads, bool cpu, DType compute) {
  if (cpu) return "fused attention runs on CUDA; the CPU computes plain attention: drop --attention fused";
  if (compute != DType::bf16)
    return fmt::format("fused attention computes in bf16 (precision.param bf16), not {}: use --attention plain",
                       dtype_name(compute));
  if (const int hd = d / heads; hd != 16 && hd != 32 && hd != 64 && hd != 128)
    return fmt::format(
        "fused attention takes a head size (d_model / heads) of 16, 32, 64 or 128, not {} = {} / {}: change the "
        "heads or use --attention plain",
        hd, d, heads);
  if (int64_t{batch} * heads > 65535)
    return fmt::format(
        "fused attention runs a grid row per sequence and head: batch {} x heads {} is over 65535; use a smaller "
        "batch per rank (more accumulation steps) or --attention plain",
        batch, heads);
  return {};
}

bool gpt_fused_attention(const Gpt& g, int batch, bool cpu, DType compute) {
  if (g.attention != Attention::automatic) return g.attention == Attention::fused;
  return gpt_fused_attention_unfit(batch, g.d, g.heads, cpu, compute).empty();
}

int64_t gpt_activation_bytes(const Gpt& g, int batch, bool cpu, DType compute, DType reduce, bool recompute) {
  const int64_t n = int64_t{batch} * g.seq, d = g.d, L = g.layers, V = g.vocab, T = g.seq, H = g.heads;
  const int64_t attn = batch * H * T * T, head_attn = H * T * T;
  const int64_t kept = recompute ? 1 : L;  // blocks whose internals are kept for the backward
  if (cpu) {
    const int64_t per_block = 16 * n * d + 4 * n + attn;
    return 4 * ((L + 1) * n * d + kept * per_block + 14 * n * d + T * T + 3 * n * d + 2 * n + n * V);
  }
  // Kept per block: qkv, attention output, residual, MLP pre-activation (9 n d); scratch: a norm's output
  // (recomputed in backward), GELU's output and its gradient (8 n d), 6 n d of gradients, qkv's (3 n d), the
  // probabilities (recomputed in backward) and one sequence's probability gradients, or with fused
  // attention none of these but f32 log-sum-exps (kept per block) and deltas, B H T each; the residual
  // stream; the logits. f32: norm statistics (4 n per block, 2 n for the final norm), per-row losses and
  // their mean, column-sum partials (2 per 256 rows per column, up to 4 d columns), the batch's tokens and
  // targets.
  const bool fused = gpt_fused_attention(g, batch, cpu, compute);
  const int64_t probs = fused ? 0 : attn + head_attn;
  const int64_t rows_heads = fused ? (kept + 1) * batch * H * T : 0;
  const int64_t act = (L + 1) * n * d + kept * 9 * n * d + 18 * n * d + probs + n * V;
  const int64_t floats = kept * 4 * n + 3 * n + 1 + 2 * ((n + 255) / 256) * 4 * d + 2 * n +
                         (reduce == DType::f32 ? 0 : V * d) + rows_heads;
  return static_cast<int64_t>(dtype_size(compute)) * act + 4 * floats;
}

int64_t gpt_activation_host_bytes(const Gpt& g, int batch, bool cpu) {
  return cpu ? 0 : 2 * 4 * int64_t{batch} * g.seq + 4;
}

Gpt parse_gpt(const std::string& spec) {
  Gpt g;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    ZS_CHECK(eq != std::string::npos, "gpt model '{}': '{}' is not key=value (keys d, L, V, T, H, attn)", spec, item);
    const std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "attn") {
      ZS_CHECK(val == "auto" || val == "plain" || val == "fused",
               "gpt model '{}': attn = '{}' is not auto, plain or fused", spec, val);
      g.attention = val == "auto" ? Attention::automatic : val == "plain" ? Attention::plain : Attention::fused;
      continue;
    }
    int v = 0;
    const auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
    ZS_CHECK(ec == std::errc() && end == val.data() + val.size() && v > 0,
             "gpt model '{}': {} = '{}' is not a positive integer", spec, key, val);
    if (key == "d")
      g.d = v;
    else if (key == "L")
      g.layers = v;
    else if (key == "V")
      g.vocab = v;
    else if (key == "T")
      g.seq = v;
    else if (key == "H")
      g.heads = v;
    else
      ZS_FAIL("gpt model '{}': unknown key '{}' (keys d, L, V, T, H, attn)", spec, key);
  }
  ZS_CHECK(g.d % g.heads == 0, "gpt model '{}': d = {} is not a multiple of H = {}", spec, g.d, g.heads);
  return g;
}

}  // namespace zs::family
