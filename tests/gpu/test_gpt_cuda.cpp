// The GPT example's CUDA layers against its CPU layers (label gpu), and the whole model trained through
// the engine on CUDA against the same run on the CPU. f32: only the GEMMs' summation order differs; bf16:
// the CPU reference gets the same bf16-rounded inputs, and the bound covers bf16 storage of every
// intermediate (8 mantissa bits: a relative step of 2^-8 = 3.9e-3 per rounding, a few roundings deep).
#include <gtest/gtest.h>

#include <array>
#include <random>
#include <string>

#include "core/bootstrap.h"
#include "core/buffer.h"
#include "core/cuda_check.h"
#include "examples/gpt/cuda/layers.h"
#include "examples/gpt/model.h"
#include "examples/gpt/trainer.h"
#include "runtime/model_family.h"
#include "tests/gpu/gpu_test.h"

namespace gpt {
namespace {

using zs::DType;
using Vec = std::vector<float>;

// Random values, rounded to `t` so the CPU and the GPU start from the same numbers.
Vec random(std::size_t n, std::mt19937& rng, DType t, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  Vec v(n);
  for (auto& x : v) {
    uint64_t word = 0;
    zs::store_from_f32(&word, t, 0, nd(rng));
    x = zs::load_as_f32(&word, t, 0);
  }
  return v;
}

// A device array in dtype t.
struct DevVec {
  zs::Buffer buf;
  DType t;
  std::size_t n;
  DevVec(const Vec& v, DType dtype)
      : buf(std::max<std::size_t>(1, v.size()) * zs::dtype_size(dtype), zs::MemoryKind::device, zs::Device::cuda(0),
            zs::MemCategory::other),
        t(dtype),
        n(v.size()) {
    std::vector<char> raw(v.size() * zs::dtype_size(t));
    for (std::size_t i = 0; i < v.size(); ++i) zs::store_from_f32(raw.data(), t, i, v[i]);
    zs::memory_copy(buf.data(), zs::Device::cuda(0), raw.data(), zs::Device::cpu(), raw.size());
  }
  void* data() const { return buf.data(); }
  float* f() const { return static_cast<float*>(buf.data()); }
  Vec get() const {
    ZS_CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<char> raw(n * zs::dtype_size(t));
    zs::memory_copy(raw.data(), zs::Device::cpu(), buf.data(), zs::Device::cuda(0), raw.size());
    Vec v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = zs::load_as_f32(raw.data(), t, i);
    return v;
  }
};

// max |gpu - cpu| over max |cpu|
double error(const Vec& gpu, const Vec& cpu) {
  EXPECT_EQ(gpu.size(), cpu.size());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(gpu[i] - cpu[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(cpu[i])));
  }
  return worst / scale;
}

double rms_error(const Vec& gpu, const Vec& cpu) {
  double diff = 0, ref = 1e-30;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    diff += (static_cast<double>(gpu[i]) - cpu[i]) * (static_cast<double>(gpu[i]) - cpu[i]);
    ref += static_cast<double>(cpu[i]) * cpu[i];
  }
  return std::sqrt(diff / ref);
}

struct Gpu {
  cublasHandle_t blas{};
  zs::Buffer colsum{static_cast<std::size_t>(cuda::column_sum_scratch(1024, 4096)) * 4, zs::MemoryKind::device,
                    zs::Device::cuda(0), zs::MemCategory::other};
  Gpu() { EXPECT_EQ(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS); }
  ~Gpu() { cublasDestroy(blas); }
  cuda::Ctx ctx(DType act, DType grad) const {
    return cuda::Ctx{blas, nullptr, act, grad, static_cast<float*>(colsum.data())};
  }
};

double bound(DType act) {
  return act == DType::f32 ? 2e-5 : 3e-2;
}

TEST(GptCuda, LayersMatchTheCpuLayers) {
  ZS_REQUIRE_GPU();
  Gpu gpu;
  for (DType act : {DType::f32, DType::bf16}) {
    const cuda::Ctx c = gpu.ctx(act, DType::f32);
    const double tol = bound(act);
    const std::string dt(zs::dtype_name(act));
    std::mt19937 rng(7);
    auto R = [&](std::size_t n, float scale = 1.0f) { return random(n, rng, act, scale); };
    auto G = [&](std::size_t n) { return random(n, rng, DType::f32, 0.1f); };  // f32 gradient accumulators

    // Sizes that are multiples of 8 take the kernels' 16-byte path, the others the element-by-element one.
    for (const auto& [n, in, out] : {std::array{37, 53, 29}, std::array{40, 48, 64}}) {
      // linear, with a residual; the backward accumulates into non-zero gradients
      SCOPED_TRACE("linear " + std::to_string(n) + " x " + std::to_string(in) + " -> " + std::to_string(out));
      Vec x = R(n * in), w = R(out * in, 0.2f), b = R(out), r = R(n * out), dy = R(n * out), dw = G(out * in),
          db = G(out), y(n * out), dx(n * in);
      DevVec X(x, act), W(w, act), B(b, act), Rr(r, act), DY(dy, act), DW(dw, DType::f32), DB(db, DType::f32),
          Y(y, act), DX(dx, act);
      linear_forward(x.data(), w.data(), b.data(), y.data(), n, in, out);
      for (std::size_t i = 0; i < y.size(); ++i) y[i] += r[i];
      linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), n, in, out);
      cuda::linear_forward(c, X.data(), W.data(), B.data(), Y.data(), n, in, out, Rr.data());
      cuda::linear_backward(c, X.data(), W.data(), DY.data(), DX.data(), DW.data(), DB.data(), n, in, out);
      EXPECT_LE(error(Y.get(), y), tol) << "linear y " << dt;
      EXPECT_LE(error(DX.get(), dx), tol) << "linear dx " << dt;
      EXPECT_LE(error(DW.get(), dw), tol) << "linear dw " << dt;
      EXPECT_LE(error(DB.get(), db), tol) << "linear db " << dt;
    }
    for (const auto& [n, d] : {std::array{600, 53}, std::array{300, 64}}) {
      // layer norm (600 rows: several column-sum chunks), dx accumulated
      SCOPED_TRACE("layer norm of " + std::to_string(d));
      Vec x = R(n * d, 2.0f), g = R(d), b = R(d), dy = R(n * d), dx = R(n * d), dg = G(d), db = G(d), y(n * d), mean(n),
          rstd(n);
      DevVec X(x, act), Gg(g, act), B(b, act), DY(dy, act), DX(dx, act), DG(dg, DType::f32), DB(db, DType::f32),
          Y(y, act), M(mean, DType::f32), S(rstd, DType::f32);
      layernorm_forward(x.data(), g.data(), b.data(), y.data(), mean.data(), rstd.data(), n, d);
      layernorm_backward(x.data(), g.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dg.data(), db.data(), n, d,
                         true);
      cuda::layernorm_forward(c, X.data(), Gg.data(), B.data(), Y.data(), M.f(), S.f(), n, d);
      cuda::layernorm_backward(c, X.data(), Gg.data(), M.f(), S.f(), DY.data(), DX.data(), DG.data(), DB.data(), n, d,
                               true);
      EXPECT_LE(error(Y.get(), y), tol) << "layernorm y " << dt;
      EXPECT_LE(error(S.get(), rstd), 1e-5) << "layernorm rstd " << dt;
      EXPECT_LE(error(DX.get(), dx), tol) << "layernorm dx " << dt;
      EXPECT_LE(error(DG.get(), dg), tol) << "layernorm dg " << dt;
      EXPECT_LE(error(DB.get(), db), tol) << "layernorm db " << dt;
    }
    for (const std::size_t n : {1001, 1024}) {  // GELU, backward in place as the backend runs it
      SCOPED_TRACE("gelu of " + std::to_string(n));
      Vec x = R(n, 2.0f), dy = R(n), y(n), dx(n);
      DevVec X(x, act), DY(dy, act), Y(y, act);
      gelu_forward(x.data(), y.data(), static_cast<int64_t>(n));
      gelu_backward(x.data(), dy.data(), dx.data(), static_cast<int64_t>(n));
      cuda::gelu_forward(c, X.data(), Y.data(), static_cast<int64_t>(n));
      cuda::gelu_backward(c, X.data(), DY.data(), DY.data(), static_cast<int64_t>(n));
      EXPECT_LE(error(Y.get(), y), tol) << "gelu " << dt;
      EXPECT_LE(error(DY.get(), dx), tol) << "gelu backward " << dt;
    }
    for (const auto& [B, T, d, H] : {std::array{2, 37, 24, 3}, std::array{2, 64, 32, 2}}) {  // causal attention
      SCOPED_TRACE("attention T=" + std::to_string(T));
      Vec qkv = R(B * T * 3 * d), dout = R(B * T * d), probs(B * H * T * T), out(B * T * d), dqkv(B * T * 3 * d),
          scratch(T * T);
      DevVec QKV(qkv, act), DO(dout, act), P(probs, act), O(out, act), DQ(dqkv, act), SC(Vec(H * T * T), act);
      attention_forward(qkv.data(), probs.data(), out.data(), B, T, d, H);
      attention_backward(qkv.data(), probs.data(), dout.data(), dqkv.data(), scratch.data(), B, T, d, H);
      cuda::attention_forward(c, QKV.data(), P.data(), O.data(), B, T, d, H);
      cuda::attention_backward(c, QKV.data(), P.data(), DO.data(), DQ.data(), SC.data(), B, T, d, H);
      EXPECT_LE(error(P.get(), probs), tol) << "attention probs " << dt;
      EXPECT_LE(error(O.get(), out), tol) << "attention out " << dt;
      EXPECT_LE(error(DQ.get(), dqkv), tol) << "attention dqkv " << dt;
    }
    // Fused attention (bf16 only) against the same CPU layers, at each head size it takes (16, 32, 64, 128);
    // sequences that end inside a 64-token tile (77, 96, 100, 130) and one that fills it (64).
    for (const auto& [B, T, d, H] : {std::array{2, 77, 32, 2}, std::array{1, 96, 64, 2}, std::array{3, 64, 128, 2},
                                     std::array{2, 130, 256, 2}, std::array{1, 100, 128, 1}}) {
      if (act != DType::bf16) {
        EXPECT_THROW(cuda::check_fused_attention(c, B, d, H), std::exception) << "fused attention in " << dt;
        continue;
      }
      const std::string what = "fused attention T=" + std::to_string(T) + " head size " + std::to_string(d / H);
      Vec qkv = R(B * T * 3 * d), dout = R(B * T * d), probs(B * H * T * T), out(B * T * d), dqkv(B * T * 3 * d),
          scratch(T * T);
      DevVec QKV(qkv, act), DO(dout, act), O(out, act), DQ(dqkv, act), LSE(Vec(B * H * T), DType::f32),
          DELTA(Vec(B * H * T), DType::f32);
      attention_forward(qkv.data(), probs.data(), out.data(), B, T, d, H);
      attention_backward(qkv.data(), probs.data(), dout.data(), dqkv.data(), scratch.data(), B, T, d, H);
      cuda::fused_attention_forward(c, QKV.data(), LSE.f(), O.data(), B, T, d, H);
      cuda::fused_attention_backward(c, QKV.data(), O.data(), LSE.f(), DO.data(), DQ.data(), DELTA.f(), B, T, d, H);
      EXPECT_LE(error(O.get(), out), tol) << what << " out";
      EXPECT_LE(error(DQ.get(), dqkv), tol) << what << " dqkv";
    }
    EXPECT_THROW(cuda::check_fused_attention(gpu.ctx(DType::bf16, DType::f32), 2, 96, 2), std::exception)
        << "head size 48";
    EXPECT_THROW(cuda::check_fused_attention(gpu.ctx(DType::bf16, DType::f32), 4096, 256, 16), std::exception)
        << "batch x heads over the grid's limit";
    for (DType grad : {DType::f32, DType::bf16}) {  // embedding: repeated tokens, both gradient dtypes
      if (act == DType::f32 && grad == DType::bf16) continue;
      const cuda::Ctx cg = gpu.ctx(act, grad);
      const int B = 3, T = 19, d = 24, V = 300;
      std::vector<int> tokens(B * T);
      for (auto& t : tokens) t = static_cast<int>(rng() % 40);
      Vec wte = R(V * d), wpe = R(T * d), dx = R(B * T * d), dwte = random(V * d, rng, grad, 0.1f),
          dwpe = random(T * d, rng, grad, 0.1f), x(B * T * d);
      DevVec WTE(wte, act), WPE(wpe, act), DX(dx, act), DWTE(dwte, grad), DWPE(dwpe, grad), X(x, act),
          TABLE(Vec(V * d), DType::f32);
      zs::Buffer tok(tokens.size() * 4, zs::MemoryKind::device, zs::Device::cuda(0), zs::MemCategory::other);
      zs::memory_copy(tok.data(), zs::Device::cuda(0), tokens.data(), zs::Device::cpu(), tokens.size() * 4);
      embedding_forward(tokens.data(), wte.data(), wpe.data(), x.data(), B, T, d);
      embedding_backward(tokens.data(), dx.data(), dwte.data(), dwpe.data(), B, T, d);
      const auto* tk = static_cast<const int*>(tok.data());
      cuda::embedding_forward(cg, tk, WTE.data(), WPE.data(), X.data(), B, T, d);
      cuda::embedding_backward(cg, tk, DX.data(), DWTE.data(), DWPE.data(), TABLE.f(), B, T, d, V);
      const double gtol = std::max(tol, bound(grad));
      EXPECT_LE(error(X.get(), x), tol) << "embedding " << dt;
      EXPECT_LE(error(DWTE.get(), dwte), gtol) << "embedding dwte " << dt << " grad " << zs::dtype_name(grad);
      EXPECT_LE(error(DWPE.get(), dwpe), gtol) << "embedding dwpe " << dt << " grad " << zs::dtype_name(grad);
    }
    {  // the tied head and the loss, forward only and with backward
      const int n = 45, d = 24, V = 300;
      std::vector<int> targets(n);
      for (auto& t : targets) t = static_cast<int>(rng() % V);
      Vec x = R(n * d), wte = R(V * d, 0.5f), dwte = G(V * d), dx(n * d), logits(n * V);
      DevVec X(x, act), WTE(wte, act), DWTE(dwte, DType::f32), DX(dx, act), L(logits, act), RL(Vec(n), DType::f32),
          LOSS(Vec(1), DType::f32);
      zs::Buffer tg(targets.size() * 4, zs::MemoryKind::device, zs::Device::cuda(0), zs::MemCategory::other);
      zs::memory_copy(tg.data(), zs::Device::cuda(0), targets.data(), zs::Device::cpu(), targets.size() * 4);
      const auto* t = static_cast<const int*>(tg.data());
      const double loss0 = head_loss(x.data(), wte.data(), targets.data(), logits.data(), static_cast<float*>(nullptr),
                                     static_cast<float*>(nullptr), n, d, V);
      cuda::head_loss(c, X.data(), WTE.data(), t, L.data(), RL.f(), LOSS.f(), nullptr, nullptr, n, d, V);
      EXPECT_LE(error(L.get(), logits), tol) << "head logits " << dt;
      EXPECT_NEAR(LOSS.get()[0], loss0, tol * loss0) << "head loss " << dt;
      const double loss1 =
          head_loss(x.data(), wte.data(), targets.data(), logits.data(), dx.data(), dwte.data(), n, d, V);
      cuda::head_loss(c, X.data(), WTE.data(), t, L.data(), RL.f(), LOSS.f(), DX.data(), DWTE.data(), n, d, V);
      EXPECT_NEAR(LOSS.get()[0], loss1, tol * loss1) << "head loss (backward) " << dt;
      EXPECT_LE(error(DX.get(), dx), tol) << "head dx " << dt;
      EXPECT_LE(error(DWTE.get(), dwte), tol) << "head dwte " << dt;
    }
  }
}

// The model the training tests run: 2 blocks of d = 64, 4 heads, 32 tokens.
Shape small_shape() {
  Shape s;
  s.d = 64, s.layers = 2, s.heads = 4, s.seq = 32;
  return s;
}

// Every parameter's gradient from one step through the engine (stage 3, prefetch 2) on CUDA + NCCL
// against the CPU + Gloo run: SGD with lr 1 and no decay or clipping turns each parameter's change into its
// gradient, so a tensor whose gradient is wrong is named (f32: GEMM summation order only, 1e-4 of the RMS).
// Stage 3 reduce-scatters out of place; stage 0 all-reduces in place (this is how NCCL's one-rank tail bug,
// NVIDIA/nccl#1950, showed: each block's last 12 gradients, mlp.proj.b's, were the previous step's).
TEST(GptCuda, GradientsMatchTheCpuModel) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = zs::test::cpu_and_gpu_groups();
  const Shape shape = small_shape();
  const int batch = 4;
  const zs::family::Units units = zs::family::gpt_units(shape);
  // The gradients of one step, tensor by tensor (unit order), on `device` at `stage`.
  auto run = [&](zs::ProcessGroup& pg, const char* device, int stage) {
    zs::Config cfg;
    cfg.device = device;
    cfg.zero.stage = stage;
    cfg.optimizer.type = zs::kernels::Optimizer::sgd;
    cfg.optimizer.lr = 1.0f;
    zs::Engine e(cfg, *pg.world);
    Trainer model(e, shape, batch);
    e.init_params([&](std::string_view name) { return init_rule(name, shape, 11); });
    std::vector<Vec> before, grads;
    for (std::size_t u = 0; u < units.size(); ++u)
      for (const auto& t : units[u].second) before.push_back(e.read_param(static_cast<zs::UnitId>(u), t.name));
    std::vector<int> tokens(static_cast<std::size_t>(batch * shape.seq)), targets(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<int>((i * 7) % 97);
      targets[i] = static_cast<int>((i * 7 + 7) % 97);
    }
    model.train(tokens.data(), targets.data());
    e.step();
    std::size_t k = 0;
    for (std::size_t u = 0; u < units.size(); ++u)
      for (const auto& t : units[u].second) {
        Vec after = e.read_param(static_cast<zs::UnitId>(u), t.name);
        for (std::size_t i = 0; i < after.size(); ++i) after[i] = before[k][i] - after[i];
        grads.push_back(std::move(after));
        ++k;
      }
    return grads;
  };
  const std::vector<Vec> cpu = run(cpu_pg, "cpu", 3);
  for (int stage : {3, 0}) {
    const std::vector<Vec> gpu = run(gpu_pg, "cuda", stage);
    std::size_t k = 0;
    for (const auto& [unit, tensors] : units)
      for (const auto& t : tensors) {
        EXPECT_LE(rms_error(gpu[k], cpu[k]), 1e-4) << "stage " << stage << " unit " << unit << " tensor " << t.name;
        ++k;
      }
  }
}

// The model through the engine (stage 3, prefetch 2) on CUDA + NCCL against the CPU + Gloo run at world 1:
// the same initialisation and batches for 6 AdamW steps. f32: losses and a trained weight (RMS of the
// difference: AdamW's normalised step turns summation-order noise in near-zero gradients into whole steps
// on a few elements) within GEMM summation order; bf16 (parameters and activations; f32 gradients and
// master): the losses within its rounding, with plain and with fused attention.
TEST(GptCuda, TrainsLikeTheCpuModel) {
  ZS_REQUIRE_GPU();
  auto [cpu_pg, gpu_pg] = zs::test::cpu_and_gpu_groups();
  const int batch = 4, steps = 6;
  auto run = [&](zs::ProcessGroup& pg, const char* device, DType param, bool recompute = false, bool fused = false) {
    Shape shape = small_shape();
    shape.attention = fused ? zs::family::Attention::fused : zs::family::Attention::plain;
    zs::Config cfg;
    cfg.device = device;
    cfg.precision.param = param;
    cfg.optimizer.lr = 3e-3f;
    cfg.optimizer.weight_decay = 0.1f;
    cfg.optimizer.clip_grad_norm = 1.0f;
    zs::Engine e(cfg, *pg.world);
    Trainer model(e, shape, batch, recompute);
    if (e.device().is_cuda()) {  // zsmem's prediction of the CUDA layers' buffers, to the byte
      const zs::MemoryReport m = e.memory();
      EXPECT_EQ(m.on_device[static_cast<std::size_t>(zs::MemCategory::activations)].current,
                zs::family::gpt_activation_bytes(shape, batch, false, param, DType::f32, recompute));
      EXPECT_EQ(m.on_host[static_cast<std::size_t>(zs::MemCategory::activations)].current,
                zs::family::gpt_activation_host_bytes(shape, batch, false));
    }
    e.init_params([&](std::string_view name) { return init_rule(name, shape, 11); });
    std::vector<double> losses;
    std::vector<int> tokens(static_cast<std::size_t>(batch * shape.seq)), targets(tokens.size());
    for (int s = 0; s < steps; ++s) {
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = static_cast<int>((i * 7 + static_cast<std::size_t>(s) * 13) % 97);
        targets[i] = static_cast<int>((i * 7 + static_cast<std::size_t>(s) * 13 + 7) % 97);
      }
      losses.push_back(model.train(tokens.data(), targets.data()));
      e.step();
    }
    return std::pair{losses, e.read_param(2, "mlp.fc.w")};
  };
  const auto [cpu_losses, cpu_fc] = run(cpu_pg, "cpu", DType::f32);
  for (const auto& [param, fused] :
       {std::pair{DType::f32, false}, std::pair{DType::bf16, false}, std::pair{DType::bf16, true}}) {
    const auto [losses, fc] = run(gpu_pg, "cuda", param, false, fused);
    const double tol = param == DType::f32 ? 1e-4 : 3e-2;
    const std::string what = std::string(zs::dtype_name(param)) + (fused ? " fused attention" : "");
    for (int s = 0; s < steps; ++s)
      EXPECT_NEAR(losses[static_cast<std::size_t>(s)], cpu_losses[static_cast<std::size_t>(s)],
                  tol * cpu_losses[static_cast<std::size_t>(s)])
          << "step " << s << " " << what;
    if (param == DType::f32) {
      EXPECT_LE(rms_error(fc, cpu_fc), 1e-4) << "h.1 mlp.fc.w after training";
    } else {  // activation checkpointing: the same kernels on the same inputs, so the same bits
      const auto [re_losses, re_fc] = run(gpu_pg, "cuda", param, true, fused);
      EXPECT_EQ(re_losses, losses) << "activation checkpointing, " << what;
      EXPECT_EQ(re_fc, fc) << "activation checkpointing, " << what;
    }
  }
  EXPECT_LT(cpu_losses.back(), cpu_losses.front());  // it learns (the comparison is not of two idle runs)
}

}  // namespace
}  // namespace gpt
