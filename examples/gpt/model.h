// A GPT-2-style decoder: token and position embeddings (unit "embed"), pre-LN blocks with causal
// self-attention and a GELU MLP (units "h.0" ... ), a final layer norm (unit "ln_f") and an LM head tied to
// the token embedding. The functions here are the model's math on raw pointers, in float or double, so
// the trainer and the finite-difference tests run the same code.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "examples/gpt/layers.h"
#include "runtime/engine.h"
#include "runtime/model_family.h"

namespace gpt {

using Shape = zs::family::Gpt;  // vocab 256: byte-level tokens

// A block's tensors in unit order (zs::family::gpt_block).
enum BlockTensor { LN1_G, LN1_B, QKV_W, QKV_B, PROJ_W, PROJ_B, LN2_G, LN2_B, FC_W, FC_B, FC2_W, FC2_B, kBlockTensors };

// GPT-2's initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 L), zero biases,
// unit norm gains.
zs::init::Initializer init_rule(std::string_view name, const Shape& s, uint64_t seed);
int64_t parameter_count(const Shape& s);

template <typename T>
using BlockPtrs = std::array<T*, kBlockTensors>;

// Activations one block keeps for its backward (B rows of T tokens).
template <typename T>
struct BlockCache {
  std::vector<T> x, ln1, ln1_mean, ln1_rstd, qkv, probs, att, x1, ln2, ln2_mean, ln2_rstd, h, hg;
  void resize(int B, int Tn, int d, int H) {
    const std::size_t n = static_cast<std::size_t>(B) * Tn;
    for (auto* v : {&x, &ln1, &att, &x1, &ln2}) v->resize(n * d);
    for (auto* v : {&ln1_mean, &ln1_rstd, &ln2_mean, &ln2_rstd}) v->resize(n);
    qkv.resize(n * 3 * d);
    h.resize(n * 4 * d);
    hg.resize(n * 4 * d);
    probs.resize(static_cast<std::size_t>(B) * H * Tn * Tn);
  }
};

// Scratch for a block's backward, reused across blocks.
template <typename T>
struct BlockScratch {
  std::vector<T> d_hg, d_h, d_ln, d_att, d_qkv, d_x1, probs;
  void resize(int B, int Tn, int d) {
    const std::size_t n = static_cast<std::size_t>(B) * Tn;
    d_hg.resize(n * 4 * d);
    d_h.resize(n * 4 * d);
    d_ln.resize(n * d);
    d_att.resize(n * d);
    d_x1.resize(n * d);
    d_qkv.resize(n * 3 * d);
    probs.resize(static_cast<std::size_t>(Tn) * Tn);
  }
};

// y = x + attn(ln1(x)); y += mlp(ln2(y))
template <typename T>
void block_forward(const BlockPtrs<const T>& p, const T* x, T* y, BlockCache<T>& c, int B, int Tn, int d, int H) {
  const int n = B * Tn;
  std::copy(x, x + static_cast<int64_t>(n) * d, c.x.begin());
  layernorm_forward(x, p[LN1_G], p[LN1_B], c.ln1.data(), c.ln1_mean.data(), c.ln1_rstd.data(), n, d);
  linear_forward(c.ln1.data(), p[QKV_W], p[QKV_B], c.qkv.data(), n, d, 3 * d);
  attention_forward(c.qkv.data(), c.probs.data(), c.att.data(), B, Tn, d, H);
  linear_forward(c.att.data(), p[PROJ_W], p[PROJ_B], c.x1.data(), n, d, d);
  for (int64_t i = 0; i < static_cast<int64_t>(n) * d; ++i) c.x1[static_cast<std::size_t>(i)] += x[i];
  layernorm_forward(c.x1.data(), p[LN2_G], p[LN2_B], c.ln2.data(), c.ln2_mean.data(), c.ln2_rstd.data(), n, d);
  linear_forward(c.ln2.data(), p[FC_W], p[FC_B], c.h.data(), n, d, 4 * d);
  gelu_forward(c.h.data(), c.hg.data(), static_cast<int64_t>(n) * 4 * d);
  linear_forward(c.hg.data(), p[FC2_W], p[FC2_B], y, n, 4 * d, d);
  for (int64_t i = 0; i < static_cast<int64_t>(n) * d; ++i) y[i] += c.x1[static_cast<std::size_t>(i)];
}

// dx (overwritten) from dy; parameter gradients added into g.
template <typename T>
void block_backward(const BlockPtrs<const T>& p, const BlockPtrs<T>& g, const BlockCache<T>& c, const T* dy, T* dx,
                    BlockScratch<T>& s, int B, int Tn, int d, int H) {
  const int n = B * Tn;
  const int64_t nd = static_cast<int64_t>(n) * d;
  linear_backward(c.hg.data(), p[FC2_W], dy, s.d_hg.data(), g[FC2_W], g[FC2_B], n, 4 * d, d);
  gelu_backward(c.h.data(), s.d_hg.data(), s.d_h.data(), static_cast<int64_t>(n) * 4 * d);
  linear_backward(c.ln2.data(), p[FC_W], s.d_h.data(), s.d_ln.data(), g[FC_W], g[FC_B], n, d, 4 * d);
  std::copy(dy, dy + nd, s.d_x1.begin());  // the residual
  layernorm_backward(c.x1.data(), p[LN2_G], c.ln2_mean.data(), c.ln2_rstd.data(), s.d_ln.data(), s.d_x1.data(),
                     g[LN2_G], g[LN2_B], n, d, true);
  linear_backward(c.att.data(), p[PROJ_W], s.d_x1.data(), s.d_att.data(), g[PROJ_W], g[PROJ_B], n, d, d);
  attention_backward(c.qkv.data(), c.probs.data(), s.d_att.data(), s.d_qkv.data(), s.probs.data(), B, Tn, d, H);
  linear_backward(c.ln1.data(), p[QKV_W], s.d_qkv.data(), s.d_ln.data(), g[QKV_W], g[QKV_B], n, d, 3 * d);
  std::copy(s.d_x1.begin(), s.d_x1.begin() + nd, dx);
  layernorm_backward(c.x.data(), p[LN1_G], c.ln1_mean.data(), c.ln1_rstd.data(), s.d_ln.data(), dx, g[LN1_G], g[LN1_B],
                     n, d, true);
}

}  // namespace gpt
