// The GPT example's layers: every backward against central finite differences of its forward, in double
// (the f64 reference), and the float code against the double code.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <random>

#include "examples/gpt/model.h"

namespace gpt {
namespace {

using Vec = std::vector<double>;

Vec random(std::size_t n, std::mt19937& rng, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares `analytic` (d loss / d x) with central differences of loss() at up to 60 elements of x.
void expect_gradient(const char* what, Vec& x, const Vec& analytic, const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double scale = 1e-12;
  for (double g : analytic) scale = std::max(scale, std::fabs(g));
  const std::size_t stride = std::max<std::size_t>(1, x.size() / 60);
  for (std::size_t i = 0; i < x.size(); i += stride) {
    const double keep = x[i], h = 1e-6 * std::max(1.0, std::fabs(keep));
    x[i] = keep + h;
    const double up = loss();
    x[i] = keep - h;
    const double down = loss();
    x[i] = keep;
    const double fd = (up - down) / (2 * h);
    EXPECT_NEAR(analytic[i], fd, 1e-6 * scale) << what << "[" << i << "]";
  }
}

TEST(GptLayers, LinearLayerNormGelu) {
  std::mt19937 rng(1);
  const int n = 5, in = 7, out = 6;
  Vec x = random(n * in, rng), w = random(out * in, rng), b = random(out, rng), r = random(n * out, rng);
  Vec y(n * out), dx(n * in), dw(out * in, 0.0), db(out, 0.0);
  auto lin = [&] {
    linear_forward(x.data(), w.data(), b.data(), y.data(), n, in, out);
    return dot(y, r);
  };
  linear_backward(x.data(), w.data(), r.data(), dx.data(), dw.data(), db.data(), n, in, out);
  expect_gradient("linear dx", x, dx, lin);
  expect_gradient("linear dw", w, dw, lin);
  expect_gradient("linear db", b, db, lin);

  const int d = 9;
  Vec lx = random(n * d, rng, 2.0), g = random(d, rng), bb = random(d, rng), lr = random(n * d, rng);
  Vec ly(n * d), mean(n), rstd(n), ldx(n * d), dg(d, 0.0), dbb(d, 0.0);
  auto ln = [&] {
    layernorm_forward(lx.data(), g.data(), bb.data(), ly.data(), mean.data(), rstd.data(), n, d);
    return dot(ly, lr);
  };
  ln();
  layernorm_backward(lx.data(), g.data(), mean.data(), rstd.data(), lr.data(), ldx.data(), dg.data(), dbb.data(), n, d,
                     false);
  expect_gradient("layernorm dx", lx, ldx, ln);
  expect_gradient("layernorm dg", g, dg, ln);
  expect_gradient("layernorm db", bb, dbb, ln);

  Vec gx = random(40, rng, 2.0), gy(40), gr = random(40, rng), gdx(40);
  auto ge = [&] {
    gelu_forward(gx.data(), gy.data(), 40);
    return dot(gy, gr);
  };
  gelu_backward(gx.data(), gr.data(), gdx.data(), 40);
  expect_gradient("gelu", gx, gdx, ge);
}

// The float GELU's tanh: within 2.5e-7 of the double tanh (absolute) from -20 to 20, +-1 beyond, NaN kept.
TEST(GptLayers, FloatTanhIsWithinTwoAndAHalfE7OfTanh) {
  double worst = 0;
  for (int i = -200000; i <= 200000; ++i) {
    const float u = static_cast<float>(i) * 1e-4f;
    worst = std::max(worst, std::fabs(static_cast<double>(tanh_approx(u)) - std::tanh(static_cast<double>(u))));
  }
  for (float u : {1e-30f, -1e-30f, 1e-7f, 0.0f, -0.0f})
    worst = std::max(worst, std::fabs(static_cast<double>(tanh_approx(u)) - std::tanh(static_cast<double>(u))));
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_EQ(tanh_approx(40.0f), 1.0f);
  EXPECT_EQ(tanh_approx(-1e30f), -1.0f);
  EXPECT_EQ(tanh_approx(std::numeric_limits<float>::infinity()), 1.0f);
  EXPECT_TRUE(std::isnan(tanh_approx(std::numeric_limits<float>::quiet_NaN())));
}

TEST(GptLayers, CausalAttention) {
  std::mt19937 rng(2);
  const int B = 2, T = 5, d = 8, H = 2;
  Vec qkv = random(B * T * 3 * d, rng), r = random(B * T * d, rng);
  Vec probs(B * H * T * T), out(B * T * d), dqkv(qkv.size()), scratch(T * T);
  auto f = [&] {
    attention_forward(qkv.data(), probs.data(), out.data(), B, T, d, H);
    return dot(out, r);
  };
  f();
  // Causal: row i of every head's probabilities sums to 1 over j <= i and is 0 beyond.
  for (int i = 0; i < T; ++i) {
    double s = 0;
    for (int j = 0; j < T; ++j) s += probs[static_cast<std::size_t>(i * T + j)];
    EXPECT_NEAR(s, 1.0, 1e-12);
    EXPECT_EQ(probs[static_cast<std::size_t>(i * T + T - 1)],
              i == T - 1 ? probs[static_cast<std::size_t>(i * T + T - 1)] : 0.0);
  }
  attention_backward(qkv.data(), probs.data(), r.data(), dqkv.data(), scratch.data(), B, T, d, H);
  expect_gradient("attention dqkv", qkv, dqkv, f);
}

TEST(GptLayers, EmbeddingAndTiedHeadLoss) {
  std::mt19937 rng(3);
  const int B = 2, T = 4, d = 6, V = 11, n = B * T;
  std::vector<int> tok(n), tgt(n);
  for (int i = 0; i < n; ++i) {
    tok[static_cast<std::size_t>(i)] = static_cast<int>(rng() % V);
    tgt[static_cast<std::size_t>(i)] = static_cast<int>(rng() % V);
  }
  Vec wte = random(V * d, rng), wpe = random(T * d, rng), x(n * d), r = random(n * d, rng);
  Vec dwte(V * d, 0.0), dwpe(T * d, 0.0);
  auto emb = [&] {
    embedding_forward(tok.data(), wte.data(), wpe.data(), x.data(), B, T, d);
    return dot(x, r);
  };
  embedding_backward(tok.data(), r.data(), dwte.data(), dwpe.data(), B, T, d);
  expect_gradient("embedding dwte", wte, dwte, emb);
  expect_gradient("embedding dwpe", wpe, dwpe, emb);

  Vec hx = random(n * d, rng), logits(n * V), hdx(n * d), hdw(V * d, 0.0);
  auto loss = [&] {
    return head_loss<double>(hx.data(), wte.data(), tgt.data(), logits.data(), nullptr, nullptr, n, d, V);
  };
  const double l = head_loss(hx.data(), wte.data(), tgt.data(), logits.data(), hdx.data(), hdw.data(), n, d, V);
  EXPECT_NEAR(l, loss(), 1e-12);
  expect_gradient("head dx", hx, hdx, loss);
  expect_gradient("head dwte", wte, hdw, loss);
}

// A whole block: the input gradient and all twelve parameter gradients; then float against double.
TEST(GptLayers, BlockBackwardAndFloatMatchesDouble) {
  std::mt19937 rng(4);
  const int B = 2, T = 4, d = 8, H = 2, n = B * T;
  const auto specs = zs::family::gpt_block(d);
  std::vector<Vec> p, g;
  for (const auto& s : specs) {
    p.push_back(random(static_cast<std::size_t>(s.shape.numel()), rng, 0.5));
    g.emplace_back(p.back().size(), 0.0);
  }
  Vec x = random(n * d, rng), y(n * d), r = random(n * d, rng), dx(n * d);
  BlockCache<double> c;
  c.resize(B, T, d, H);
  BlockScratch<double> s;
  s.resize(B, T, d);
  BlockPtrs<const double> pp{};
  BlockPtrs<double> gp{};
  for (int i = 0; i < kBlockTensors; ++i) {
    pp[static_cast<std::size_t>(i)] = p[static_cast<std::size_t>(i)].data();
    gp[static_cast<std::size_t>(i)] = g[static_cast<std::size_t>(i)].data();
  }
  auto f = [&] {
    block_forward(pp, x.data(), y.data(), c, B, T, d, H);
    return dot(y, r);
  };
  f();
  block_backward(pp, gp, c, r.data(), dx.data(), s, B, T, d, H);
  expect_gradient("block dx", x, dx, f);
  for (int i = 0; i < kBlockTensors; ++i)
    expect_gradient(specs[static_cast<std::size_t>(i)].name.c_str(), p[static_cast<std::size_t>(i)],
                    g[static_cast<std::size_t>(i)], f);

  // float: the same block within float rounding of the double result.
  std::vector<std::vector<float>> pf;
  BlockPtrs<const float> ppf{};
  for (int i = 0; i < kBlockTensors; ++i) {
    pf.emplace_back(p[static_cast<std::size_t>(i)].begin(), p[static_cast<std::size_t>(i)].end());
    ppf[static_cast<std::size_t>(i)] = pf.back().data();
  }
  std::vector<float> xf(x.begin(), x.end()), yf(n * d);
  BlockCache<float> cf;
  cf.resize(B, T, d, H);
  f();
  block_forward(ppf, xf.data(), yf.data(), cf, B, T, d, H);
  double err = 0, norm = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    err = std::max(err, std::fabs(yf[i] - y[i]));
    norm = std::max(norm, std::fabs(y[i]));
  }
  EXPECT_LE(err, 1e-5 * norm);
}

}  // namespace
}  // namespace gpt
