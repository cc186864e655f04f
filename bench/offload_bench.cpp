// offload_bench: one GPU, a GPT-sized stack of cuBLAS GEMMs trained through the engine at stage 3 in bf16,
// with the optimizer on the device, offloaded to the CPU (streaming or delayed), or with the parameters
// offloaded too: step time, the ledger's peak on the device and the host, the process's peak RSS.
//
// Each unit is one GPT block's weights (qkv 3d x d, proj d x d, fc1 4d x d, fc2 d x 4d: 12 d^2) plus an
// embedding unit (V x d, used as the LM head); the app runs the block's six GEMMs forward (the attention
// itself and the nonlinearities are left out: this measures the engine and the offload pipeline around the
// GEMMs, at the GEMMs' own FLOP count, 6 x params x tokens per step). bf16 inputs, f32 accumulation, f32
// gradients (precision.reduce). Launch with zsrun --nproc-per-node 1.
#include <cublas_v2.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/cuda_check.h"
#include "core/error.h"
#include "runtime/cli.h"
#include "runtime/engine.h"

namespace {

using namespace zs;

#define ZS_CHECK_CUBLAS(expr)                                                                          \
  do {                                                                                                 \
    const cublasStatus_t s_ = (expr);                                                                  \
    ZS_CHECK(s_ == CUBLAS_STATUS_SUCCESS, "{} failed: cuBLAS status {}", #expr, static_cast<int>(s_)); \
  } while (0)

struct Args {
  int d = 2048, layers = 24, vocab = 32000, tokens = 8192, steps = 3;
  float clip = 1.0f;             // optimizer.clip_grad_norm; 0: the offloaded update starts in the backward
  std::string offload = "none";  // a Config::Offload::kChoices word
  std::string nvme_path;         // with nvme: offload.nvme_path (default: the temporary directory)
  int buffers = 4;               // with nvme: offload.buffer_count
  int param_buffers = 5;         // with nvme-params: offload.param_buffer_count
  int grad_buffers = 4;          // with nvme-grads: offload.grad_buffer_count
  std::string reduce = "f32";
  std::string states = "f32";       // optimizer.state_dtype
  double ratio = 1.0;               // offload.ratio: the share of the optimizer on the host (the last units)
  int accumulation = 1;             // zero.grad_accumulation: micro-batches of `tokens` each per step
  std::string accumulate = "auto";  // offload.accumulate: where offloaded units add the micro-batches up
};

// Row-major C (m x n) = op(A) op(B) (+ beta C), bf16 inputs, f32 accumulation; C in `ct` (bf16 or f32).
// Row-major X is column-major X^T, so this is cuBLAS's C^T = op(B)^T op(A)^T.
void gemm(cublasHandle_t h, bool ta, bool tb, int m, int n, int k, const void* a, int lda, const void* b, int ldb,
          void* c, cudaDataType ct, int ldc, float beta) {
  const float alpha = 1.0f;
  ZS_CHECK_CUBLAS(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b,
                               CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &beta, c, ct, ldc, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

struct Stack {
  Args a;
  cublasHandle_t h{};
  cudaStream_t s{};  // the engine's compute stream
  // Activations per block (bf16): x (T x d), qkv (T x 3d), x2 (T x d), h (T x 4d); gradient scratch.
  std::vector<Buffer> x, qkv, x2, hid;
  Buffer dy, dx, dh, dqkv, logits;

  Stack(const Args& args, Device dev, cudaStream_t stream) : a(args), s(stream) {
    // The app's kernels run on the engine's compute stream: gathers are ready there, and reduce_grads
    // takes the gradients written there.
    ZS_CHECK_CUBLAS(cublasCreate(&h));
    ZS_CHECK_CUBLAS(cublasSetStream(h, s));
    const auto T = static_cast<std::size_t>(a.tokens), d = static_cast<std::size_t>(a.d);
    auto act = [&](std::size_t n) { return Buffer(n * 2, MemoryKind::device, dev, MemCategory::activations); };
    for (int l = 0; l <= a.layers; ++l) {
      x.push_back(act(T * d));
      qkv.push_back(act(T * 3 * d));
      x2.push_back(act(T * d));
      hid.push_back(act(T * 4 * d));
    }
    dy = act(T * d);
    dx = act(T * d);
    dh = act(T * 4 * d);
    dqkv = act(T * 3 * d);
    logits = act(T * static_cast<std::size_t>(a.vocab));
    std::vector<uint16_t> x0(T * d);  // the input: values in [-1, 1], bf16
    for (std::size_t i = 0; i < x0.size(); ++i)
      store_from_f32(x0.data(), DType::bf16, i,
                     static_cast<float>(static_cast<int64_t>((i * 2654435761u) % 2001) - 1000) / 1000.0f);
    memory_copy(x[0].data(), dev, x0.data(), Device::cpu(), x0.size() * 2);
    // Only dqkv's first d columns are ever written (the attention is left out): the rest stay zero.
    ZS_CHECK_CUDA(cudaMemsetAsync(dqkv.data(), 0, dqkv.bytes(), s));
  }
  ~Stack() { cublasDestroy(h); }

  void step(Engine& e) {
    for (int mb = 0; mb < e.config().zero.grad_accumulation; ++mb) micro_batch(e);
    e.step();
  }

  void micro_batch(Engine& e) {
    const int T = a.tokens, d = a.d, V = a.vocab, L = a.layers;
    const cudaDataType g32 = e.config().precision.reduce == DType::f32 ? CUDA_R_32F : CUDA_R_16BF;
    for (int l = 0; l < L; ++l) {  // block l is unit l + 1; unit 0 is the embedding / head
      GatheredParams p = e.gather(l + 1);
      const void *wqkv = p.tensor(0).data, *wproj = p.tensor(1).data, *wfc1 = p.tensor(2).data,
                 *wfc2 = p.tensor(3).data;
      const auto i = static_cast<std::size_t>(l);
      gemm(h, false, true, T, 3 * d, d, x[i].data(), d, wqkv, d, qkv[i].data(), CUDA_R_16BF, 3 * d, 0);
      gemm(h, false, true, T, d, d, qkv[i].data(), 3 * d, wproj, d, x2[i].data(), CUDA_R_16BF, d, 0);
      gemm(h, false, true, T, 4 * d, d, x2[i].data(), d, wfc1, d, hid[i].data(), CUDA_R_16BF, 4 * d, 0);
      gemm(h, false, true, T, d, 4 * d, hid[i].data(), 4 * d, wfc2, 4 * d, x[i + 1].data(), CUDA_R_16BF, d, 0);
    }
    {  // the head: logits = x E^T; the "loss gradient" is the logits scaled down (no softmax: GEMM time only)
      GatheredParams p = e.gather(0);
      const void* emb = p.tensor(0).data;
      const auto top = static_cast<std::size_t>(L);
      gemm(h, false, true, T, V, d, x[top].data(), d, emb, d, logits.data(), CUDA_R_16BF, V, 0);
      gemm(h, true, false, V, d, T, logits.data(), V, x[top].data(), d, e.grads(0, 0).data, g32, d, 1);
      gemm(h, false, false, T, d, V, logits.data(), V, emb, d, dy.data(), CUDA_R_16BF, d, 0);
      e.reduce_grads(0);
    }
    for (int l = L - 1; l >= 0; --l) {
      GatheredParams p = e.gather(l + 1);
      const void *wqkv = p.tensor(0).data, *wproj = p.tensor(1).data, *wfc1 = p.tensor(2).data,
                 *wfc2 = p.tensor(3).data;
      const auto i = static_cast<std::size_t>(l);
      // fc2: dW = dy^T h, dh = dy W
      gemm(h, true, false, d, 4 * d, T, dy.data(), d, hid[i].data(), 4 * d, e.grads(l + 1, 3).data, g32, 4 * d, 1);
      gemm(h, false, false, T, 4 * d, d, dy.data(), d, wfc2, 4 * d, dh.data(), CUDA_R_16BF, 4 * d, 0);
      // fc1: dW = dh^T x2, dx2 = dh W
      gemm(h, true, false, 4 * d, d, T, dh.data(), 4 * d, x2[i].data(), d, e.grads(l + 1, 2).data, g32, d, 1);
      gemm(h, false, false, T, d, 4 * d, dh.data(), 4 * d, wfc1, d, dx.data(), CUDA_R_16BF, d, 0);
      // proj: dW = dx2^T qkv[:, :d], dqkv[:, :d] = dx2 W (the other columns' gradient is left as zero)
      gemm(h, true, false, d, d, T, dx.data(), d, qkv[i].data(), 3 * d, e.grads(l + 1, 1).data, g32, d, 1);
      gemm(h, false, false, T, d, d, dx.data(), d, wproj, d, dqkv.data(), CUDA_R_16BF, 3 * d, 0);
      // qkv: dW = dqkv^T x, dx = dqkv W
      gemm(h, true, false, 3 * d, d, T, dqkv.data(), 3 * d, x[i].data(), d, e.grads(l + 1, 0).data, g32, d, 1);
      gemm(h, false, false, T, d, 3 * d, dqkv.data(), 3 * d, wqkv, d, dy.data(), CUDA_R_16BF, d, 0);
      e.reduce_grads(l + 1);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"offload_bench: a GPT-sized GEMM stack at stage 3 bf16 on one GPU, with and without offload",
               "offload_bench"};
  app.add_option("--d", a.d, "width")->capture_default_str();
  app.add_option("--layers", a.layers, "blocks (12 d^2 parameters each)")->capture_default_str();
  app.add_option("--vocab", a.vocab, "embedding rows")->capture_default_str();
  app.add_option("--tokens", a.tokens, "tokens per step (batch x sequence)")->capture_default_str();
  app.add_option("--steps", a.steps, "timed steps (after one warm-up step)")->capture_default_str();
  app.add_option("--nvme-path", a.nvme_path, "with --offload nvme or *nvme-params: the directory of the files");
  app.add_option("--buffers", a.buffers, "with --offload nvme: offload.buffer_count")->capture_default_str();
  app.add_option("--param-buffers", a.param_buffers, "with --offload *nvme-params: offload.param_buffer_count")
      ->capture_default_str();
  app.add_option("--grad-buffers", a.grad_buffers, "with --offload nvme+nvme-grads*: offload.grad_buffer_count")
      ->capture_default_str();
  app.add_option("--offload", a.offload,
                 "none, optimizer, optimizer+params, delayed, nvme, nvme+params, optimizer+nvme-params, "
                 "nvme+nvme-params, nvme+nvme-grads, nvme+nvme-grads+params, nvme+nvme-grads+nvme-params")
      ->check(zs::offload_choices())
      ->capture_default_str();
  app.add_option("--reduce", a.reduce, "gradient dtype: f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--clip", a.clip,
                 "gradient clipping norm (0: off; the offloaded update then starts as each unit's "
                 "gradients land, behind the backward)")
      ->check(zs::non_negative())
      ->capture_default_str();
  app.add_option("--states", a.states, "AdamW's m and v: f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--offload-ratio", a.ratio,
                 "offload.ratio with --offload optimizer: the share of the parameters whose optimizer runs on the "
                 "host (the last units), the rest on the GPU")
      ->check(zs::offload_ratio())
      ->capture_default_str();
  app.add_option("--accumulation", a.accumulation, "micro-batches of --tokens each per step (zero.grad_accumulation)")
      ->check(zs::positive())
      ->capture_default_str();
  app.add_option("--offload-accumulate", a.accumulate,
                 "offload.accumulate with --accumulation: where offloaded units add the micro-batches up")
      ->check(CLI::IsMember({"auto", "host", "device"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    Config cfg;
    cfg.device = "cuda";
    cfg.zero.stage = 3;
    cfg.zero.prefetch = 2;
    cfg.zero.max_live_units = 4;
    cfg.precision.param = DType::bf16;
    cfg.precision.reduce = dtype_parse(a.reduce);
    cfg.optimizer.state_dtype = dtype_parse(a.states);
    cfg.optimizer.lr = 1e-5f;
    cfg.optimizer.weight_decay = 0.1f;
    cfg.optimizer.clip_grad_norm = a.clip;
    cfg.offload.choose(a.offload);
    cfg.offload.ratio = a.ratio;
    cfg.offload.nvme_path = a.nvme_path.empty() ? std::filesystem::temp_directory_path().string() : a.nvme_path;
    cfg.offload.buffer_count = a.buffers;
    cfg.offload.param_buffer_count = a.param_buffers;
    cfg.offload.grad_buffer_count = a.grad_buffers;
    cfg.zero.grad_accumulation = a.accumulation;
    cfg.offload.accumulate = a.accumulate;
    Engine e(cfg);
    const int64_t d = a.d;
    e.add_unit("embed", {{"w", {a.vocab, d}}});
    for (int l = 0; l < a.layers; ++l)
      e.add_unit("h" + std::to_string(l),
                 {{"qkv", {3 * d, d}}, {"proj", {d, d}}, {"fc1", {4 * d, d}}, {"fc2", {d, 4 * d}}});
    const double params = static_cast<double>(a.vocab) * d + 12.0 * a.layers * d * d;
    const auto t_init = std::chrono::steady_clock::now();
    // The stack has no normalisation: std 1/sqrt(fan-in) keeps every GEMM's output at its input's scale at
    // any width (0.02 grows the activations 5x per block at d=4096, and their squares past f32 in the
    // gradient norm within 35 blocks). Uniform values of that std: the timings do not depend on the values,
    // and uniform draws cost a ninth of normal ones (3.6 vs 32.9 ns per element and thread), seconds of
    // device time per row at 1.3 B parameters and more at 7 B.
    auto uniform_std = [](float std) { return init::uniform(-std * std::sqrt(3.0f), std * std::sqrt(3.0f), 1); };
    e.init_params([d, uniform_std](std::string_view name) {
      if (name.ends_with(".fc2")) return uniform_std(1.0f / std::sqrt(4.0f * static_cast<float>(d)));
      if (name.starts_with("h")) return uniform_std(1.0f / std::sqrt(static_cast<float>(d)));
      return uniform_std(0.02f);
    });
    const double init_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_init).count();
    auto* s = static_cast<cudaStream_t>(e.compute_stream().native_handle());
    Stack st(a, e.device(), s);
    st.step(e);       // warm-up: records the gather order
    e.synchronize();  // the offloaded step too
    ZS_CHECK_CUDA(cudaDeviceSynchronize());
    MemoryLedger::global().reset_peaks();
    e.take_offload_timing();  // from here on
    // Steps back to back (a streaming step's CPU update overlaps the next forward), then everything drained:
    // the mean over the run is the step time a training loop sees.
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < a.steps; ++i) st.step(e);
    e.synchronize();
    ZS_CHECK_CUDA(cudaDeviceSynchronize());
    const double med =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / a.steps;
    const offload::Timing ot = e.take_offload_timing();
    const MemoryReport m = e.memory();
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const DeviceMemoryUse cuda = device_memory_use(e.device());
    const double gib = 1073741824.0;
    const double tokens = static_cast<double>(a.tokens) * a.accumulation;
    std::printf(
        "offload_bench: %.3f B params, d=%d L=%d V=%d, %.0f tokens/step (%d micro-batches), stage 3 bf16 (reduce %s, "
        "states %s, clip %g), offload %s (ratio %g, accumulate %s)\n"
        "  step_ms %.1f  tokens/s %.0f  TFLOP/s %.1f (GEMMs: 6 x params x tokens)  init %.1f s\n"
        "  ledger peak: device %.2f GiB (params %.2f, grads %.2f, gather %.2f, activations %.2f), host %.2f GiB\n"
        "  cuda in use %.2f GiB of %.2f; process peak RSS %.2f GiB\n",
        params / 1e9, a.d, a.layers, a.vocab, tokens, a.accumulation, a.reduce.c_str(), a.states.c_str(), a.clip,
        a.offload.c_str(), a.ratio, a.accumulate.c_str(), med, tokens / (med / 1e3),
        6.0 * params * tokens / (med / 1e3) / 1e12, init_s, m.device_total.peak / gib,
        m.on_device[static_cast<std::size_t>(MemCategory::params)].peak / gib,
        m.on_device[static_cast<std::size_t>(MemCategory::grads)].peak / gib,
        m.on_device[static_cast<std::size_t>(MemCategory::gather_buffers)].peak / gib,
        m.on_device[static_cast<std::size_t>(MemCategory::activations)].peak / gib, m.host_total.peak / gib,
        static_cast<double>(cuda.used) / gib, static_cast<double>(cuda.total) / gib,
        static_cast<double>(ru.ru_maxrss) * 1024 / gib);
    // Offloaded: is the step bound by the CPU's update (its time near the step's) or by what does not overlap?
    if (ot.updates > 0)
      std::printf(
          "  offload: CPU updates %.1f ms/step on %d threads (%.2f GB/step, %.1f GB/s), the host blocked on them "
          "%.1f ms/step, the CPU waited for the disk %.1f ms/step\n",
          ot.update_ms / a.steps, kernels::cpu_threads(), ot.update_bytes / a.steps / 1e9,
          ot.update_bytes / (ot.update_ms * 1e6), ot.wait_ms / a.steps, ot.disk_wait_ms / a.steps);
    if (ot.updates > 0 && cfg.host_accumulation())
      std::printf(
          "  accumulation on the host: adds %.1f ms/step on the CPU, the backward blocked on a staging buffer "
          "%.1f ms/step\n",
          ot.accumulate_ms / a.steps, ot.staging_wait_ms / a.steps);
    if (ot.param_disk.acquires > 0)
      std::printf(
          "  parameters on disk: %lld of %lld gathers read their shard from the disk, the host blocked on the "
          "reads %.1f ms/step\n",
          static_cast<long long>(ot.param_disk.reads), static_cast<long long>(ot.param_disk.acquires),
          ot.param_disk.wait_ms / a.steps);
    if (ot.grad_disk.acquires > 0)
      std::printf(
          "  gradients on disk: %lld of %lld updates read their shard from the disk, the CPU blocked on the reads "
          "%.1f ms/step, the backward on a free slot %.1f ms/step\n",
          static_cast<long long>(ot.grad_disk.reads), static_cast<long long>(ot.grad_disk.acquires),
          ot.grad_disk.wait_ms / a.steps, ot.grad_disk.write_wait_ms / a.steps);
    return 0;
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "offload_bench: %s\n", ex.what());
    return 1;
  }
}
