// The test model (4 units: an input layer, two residual blocks with layer norm, a softmax head) with a
// hand-written forward and backward, templated on the scalar type: float for the app that trains through
// the engine, double for the single-process reference trainer. Sizes (37, 53, 11) divide no world size.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sharding/flat_layout.h"
#include "sharding/init.h"

namespace zs::test {

constexpr int kIn = 37, kHidden = 53, kClasses = 11, kGlobalBatch = 12;

// unit -> its tensors (name, shape, weight decay)
inline std::vector<std::pair<std::string, std::vector<TensorSpec>>> model_units() {
  auto block = [](const std::string& n) {
    return std::pair{n, std::vector<TensorSpec>{{"w", {kHidden, kHidden}, true, true},
                                                {"b", {kHidden}, true, false},
                                                {"ln_g", {kHidden}, true, false},
                                                {"ln_b", {kHidden}, true, false}}};
  };
  return {{"input", {{"w", {kHidden, kIn}, true, true}, {"b", {kHidden}, true, false}}},
          block("block1"),
          block("block2"),
          {"head", {{"w", {kClasses, kHidden}, true, true}, {"b", {kClasses}, true, false}}}};
}

// Deterministic data: sample s of the whole run.
inline float input_value(int64_t sample, int j) {
  return init::normal(1.0f, 7).value("x", static_cast<uint64_t>(sample * kIn + j));
}
inline int label(int64_t sample) {
  return static_cast<int>(init::counter_hash(9, 0, static_cast<uint64_t>(sample)) % kClasses);
}

template <typename T>
struct Model {
  using Vec = std::vector<T>;
  // params[unit][tensor] and grads alike.
  std::vector<std::vector<Vec>> p, g;

  struct Cache {  // per sample
    Vec x, h0, a1, xhat1, t1, h1, rstd1_v, a2, xhat2, t2, h2, prob;
    T rstd1 = 0, rstd2 = 0;
  };

  static void linear(const Vec& w, const Vec& b, const Vec& in, Vec& out, int rows, int cols) {
    out.assign(static_cast<std::size_t>(rows), 0);
    for (int i = 0; i < rows; ++i) {
      T acc = b[static_cast<std::size_t>(i)];
      for (int j = 0; j < cols; ++j) acc += w[static_cast<std::size_t>(i * cols + j)] * in[static_cast<std::size_t>(j)];
      out[static_cast<std::size_t>(i)] = acc;
    }
  }

  // Block forward: out = in + tanh(LN(W in + b)).
  void block_fwd(int u, const Vec& in, Vec& a, Vec& xhat, Vec& t, Vec& out, T& rstd) const {
    linear(p[u][0], p[u][1], in, a, kHidden, kHidden);
    T mu = 0, var = 0;
    for (T v : a) mu += v;
    mu /= kHidden;
    for (T v : a) var += (v - mu) * (v - mu);
    var /= kHidden;
    rstd = T(1) / std::sqrt(var + T(1e-5));
    xhat.resize(kHidden);
    t.resize(kHidden);
    out.resize(kHidden);
    for (int i = 0; i < kHidden; ++i) {
      const auto k = static_cast<std::size_t>(i);
      xhat[k] = (a[k] - mu) * rstd;
      t[k] = std::tanh(p[u][2][k] * xhat[k] + p[u][3][k]);
      out[k] = in[k] + t[k];
    }
  }

  // Returns d(in); accumulates the unit's grads scaled by `s`.
  Vec block_bwd(int u, const Vec& in, const Vec& xhat, const Vec& t, T rstd, const Vec& dout, T s) {
    Vec dz(kHidden), dxhat(kHidden), da(kHidden), din = dout;
    T mean_dxhat = 0, mean_dxhat_xhat = 0;
    for (int i = 0; i < kHidden; ++i) {
      const auto k = static_cast<std::size_t>(i);
      dz[k] = dout[k] * (1 - t[k] * t[k]);
      g[u][2][k] += s * dz[k] * xhat[k];
      g[u][3][k] += s * dz[k];
      dxhat[k] = dz[k] * p[u][2][k];
      mean_dxhat += dxhat[k];
      mean_dxhat_xhat += dxhat[k] * xhat[k];
    }
    mean_dxhat /= kHidden;
    mean_dxhat_xhat /= kHidden;
    for (int i = 0; i < kHidden; ++i) {
      const auto k = static_cast<std::size_t>(i);
      da[k] = rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat);
      g[u][1][k] += s * da[k];
      for (int j = 0; j < kHidden; ++j) {
        g[u][0][static_cast<std::size_t>(i * kHidden + j)] += s * da[k] * in[static_cast<std::size_t>(j)];
        din[static_cast<std::size_t>(j)] += p[u][0][static_cast<std::size_t>(i * kHidden + j)] * da[k];
      }
    }
    return din;
  }

  // Forward of one unit for one sample (the app calls these between gather and release).
  void forward_unit(int u, Cache& c) const {
    if (u == 0) {
      linear(p[0][0], p[0][1], c.x, c.h0, kHidden, kIn);
      for (T& v : c.h0) v = std::tanh(v);
    } else if (u == 1) {
      block_fwd(1, c.h0, c.a1, c.xhat1, c.t1, c.h1, c.rstd1);
    } else if (u == 2) {
      block_fwd(2, c.h1, c.a2, c.xhat2, c.t2, c.h2, c.rstd2);
    } else {
      Vec logits;
      linear(p[3][0], p[3][1], c.h2, logits, kClasses, kHidden);
      T mx = logits[0];
      for (T v : logits) mx = std::max(mx, v);
      T sum = 0;
      c.prob.resize(kClasses);
      for (int i = 0; i < kClasses; ++i)
        sum += (c.prob[static_cast<std::size_t>(i)] = std::exp(logits[static_cast<std::size_t>(i)] - mx));
      for (T& v : c.prob) v /= sum;
    }
  }

  // Backward of one unit for one sample: takes d(unit output), returns d(unit input).
  Vec backward_unit(int u, const Cache& c, const Vec& dout, int y, T s) {
    if (u == 3) {
      Vec dl = c.prob, dh(kHidden, 0);
      dl[static_cast<std::size_t>(y)] -= 1;
      for (int i = 0; i < kClasses; ++i) {
        const auto k = static_cast<std::size_t>(i);
        g[3][1][k] += s * dl[k];
        for (int j = 0; j < kHidden; ++j) {
          g[3][0][static_cast<std::size_t>(i * kHidden + j)] += s * dl[k] * c.h2[static_cast<std::size_t>(j)];
          dh[static_cast<std::size_t>(j)] += p[3][0][static_cast<std::size_t>(i * kHidden + j)] * dl[k];
        }
      }
      return dh;
    }
    if (u == 2) return block_bwd(2, c.h1, c.xhat2, c.t2, c.rstd2, dout, s);
    if (u == 1) return block_bwd(1, c.h0, c.xhat1, c.t1, c.rstd1, dout, s);
    for (int i = 0; i < kHidden; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const T da = dout[k] * (1 - c.h0[k] * c.h0[k]);
      g[0][1][k] += s * da;
      for (int j = 0; j < kIn; ++j)
        g[0][0][static_cast<std::size_t>(i * kIn + j)] += s * da * c.x[static_cast<std::size_t>(j)];
    }
    return {};
  }

  static T loss(const Cache& c, int y) { return -std::log(c.prob[static_cast<std::size_t>(y)]); }
};

}  // namespace zs::test
