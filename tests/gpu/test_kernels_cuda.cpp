// CUDA kernels against their CPU twins (label gpu): bit-identical updates and casts (no FMA contraction on
// either side), sums within f32 rounding; every optimizer, dtype combination, aligned and unaligned.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <bit>
#include <cstring>
#include <random>

#include "core/bootstrap.h"
#include "core/buffer.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "tests/gpu/gpu_test.h"

namespace zs::kernels {
namespace {

const Device kGpu = Device::cuda(0);

struct Twin {  // the same bytes on host and device
  std::vector<uint8_t> host;
  Buffer dev;
  Twin(std::size_t bytes) : host(bytes), dev(bytes + 64, MemoryKind::device, kGpu, MemCategory::other) {}
  void* d(std::size_t shift = 0) { return static_cast<char*>(dev.data()) + shift; }
  void upload(std::size_t shift = 0) {
    ZS_CHECK_CUDA(cudaMemcpy(d(shift), host.data(), host.size(), cudaMemcpyHostToDevice));
  }
  std::vector<uint8_t> download(std::size_t shift = 0) {
    std::vector<uint8_t> out(host.size());
    ZS_CHECK_CUDA(cudaMemcpy(out.data(), d(shift), out.size(), cudaMemcpyDeviceToHost));
    return out;
  }
};

TEST(CudaKernels, UpdatesMatchTheCpuBitForBit) {
  ZS_REQUIRE_GPU();
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (Optimizer k : {Optimizer::adamw, Optimizer::adam, Optimizer::sgd, Optimizer::lion})
    for (DType g : {DType::f32, DType::bf16, DType::f16})
      for (DType st : {DType::f32, DType::bf16})
        for (std::size_t shift : {std::size_t{0}, std::size_t{4}}) {  // 16-byte aligned, then not
          if (k == Optimizer::sgd && st == DType::bf16) continue;
          const int64_t n = 1000003;
          OptimizerHyper h;
          h.kind = k;
          h.step = 10000;
          h.weight_decay = 0.1f;
          h.nesterov = true;
          Twin p(n * 4), gr(n * dtype_size(g)), s1(n * dtype_size(st)), s2(n * dtype_size(st)), out(n * 2);
          for (int64_t i = 0; i < n; ++i) {
            reinterpret_cast<float*>(p.host.data())[i] = nd(rng);
            store_from_f32(gr.host.data(), g, i, nd(rng));
            store_from_f32(s1.host.data(), st, i, nd(rng) * 0.1f);
            store_from_f32(s2.host.data(), st, i, std::fabs(nd(rng)) * 0.01f);
          }
          for (Twin* t : {&p, &gr, &s1, &s2}) t->upload(shift);
          std::vector<ElementRange> ranges = {{n / 5, n / 2}, {(2 * n) / 3, n - n / 7}};
          Buffer dranges(ranges.size() * sizeof(ElementRange), MemoryKind::device, kGpu, MemCategory::other);
          memory_copy(dranges.data(), kGpu, ranges.data(), Device::cpu(), ranges.size() * sizeof(ElementRange));
          const bool adam = k == Optimizer::adamw || k == Optimizer::adam;
          UpdateArgs a;
          a.n = n;
          a.grad_dtype = g;
          a.grad_scale = 0.5f;
          a.state_dtype = st;
          a.param_out_dtype = DType::bf16;
          a.num_decay_ranges = 2;
          UpdateArgs cpu = a, gpu = a;
          cpu.param = reinterpret_cast<float*>(p.host.data());
          cpu.grad = gr.host.data();
          cpu.state1 = s1.host.data();
          cpu.state2 = adam ? s2.host.data() : nullptr;
          cpu.param_out = out.host.data();
          cpu.decay_ranges = ranges.data();
          gpu.param = static_cast<float*>(p.d(shift));
          gpu.grad = gr.d(shift);
          gpu.state1 = s1.d(shift);
          gpu.state2 = adam ? s2.d(shift) : nullptr;
          gpu.param_out = out.d(shift);
          gpu.decay_ranges = static_cast<const ElementRange*>(dranges.data());
          optimizer_update(kGpu, h, gpu);
          optimizer_update(Device::cpu(), h, cpu);
          ZS_CHECK_CUDA(cudaDeviceSynchronize());
          const std::string what = fmt::format("optimizer {} grad {} state {} shift {}", static_cast<int>(k),
                                               dtype_name(g), dtype_name(st), shift);
          EXPECT_EQ(p.download(shift), p.host) << what << ": param";
          EXPECT_EQ(s1.download(shift), s1.host) << what << ": state1";
          if (adam) {
            EXPECT_EQ(s2.download(shift), s2.host) << what << ": state2";
          }
          EXPECT_EQ(out.download(shift), out.host) << what << ": param_out";
        }
}

TEST(CudaKernels, CastScaleAddAndSumSquaresMatchTheCpu) {
  ZS_REQUIRE_GPU();
  const int64_t n = 1000003;
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  Twin src(n * 4);
  for (int64_t i = 0; i < n; ++i) reinterpret_cast<float*>(src.host.data())[i] = nd(rng) * 100.0f;
  src.upload();
  for (DType t : {DType::bf16, DType::f16}) {
    Twin half(n * 2);
    cast(kGpu, TensorView::flat(src.d(), DType::f32, n, kGpu), TensorView::flat(half.d(), t, n, kGpu));
    cast(Device::cpu(), TensorView::flat(src.host.data(), DType::f32, n), TensorView::flat(half.host.data(), t, n));
    EXPECT_EQ(half.download(), half.host) << "cast to " << dtype_name(t);
    Buffer flag(4, MemoryKind::device, kGpu, MemCategory::other);
    ZS_CHECK_CUDA(cudaMemset(flag.data(), 0, 4));
    scale(kGpu, TensorView::flat(half.d(), t, n, kGpu), 0.25f, static_cast<float*>(flag.data()));
    scale(Device::cpu(), TensorView::flat(half.host.data(), t, n), 0.25f);
    EXPECT_EQ(half.download(), half.host) << "scale " << dtype_name(t);
    float found = -1;
    ZS_CHECK_CUDA(cudaMemcpy(&found, flag.data(), 4, cudaMemcpyDeviceToHost));
    EXPECT_EQ(found, 0.0f);
    Twin other(n * 2);  // add: the CPU's half-precision values plus themselves scaled, on both sides
    std::memcpy(other.host.data(), half.host.data(), other.host.size());
    scale(Device::cpu(), TensorView::flat(other.host.data(), t, n), -3.0f);
    other.upload();
    add(kGpu, TensorView::flat(other.d(), t, n, kGpu), TensorView::flat(half.d(), t, n, kGpu));
    add(Device::cpu(), TensorView::flat(other.host.data(), t, n), TensorView::flat(half.host.data(), t, n));
    EXPECT_EQ(half.download(), half.host) << "add " << dtype_name(t);
    float cpu_sum = 0, gpu_sum = 0;
    Buffer out(4, MemoryKind::device, kGpu, MemCategory::other);
    sum_squares(kGpu, TensorView::flat(half.d(), t, n, kGpu), static_cast<float*>(out.data()));
    sum_squares(Device::cpu(), TensorView::flat(half.host.data(), t, n), &cpu_sum);
    ZS_CHECK_CUDA(cudaMemcpy(&gpu_sum, out.data(), 4, cudaMemcpyDeviceToHost));
    EXPECT_NEAR(gpu_sum, cpu_sum, 1e-5 * cpu_sum) << "sum of squares " << dtype_name(t);
    // add_sum_squares: on the device the same bits as its add and sum of squares apart; the values the
    // CPU's, the sum within rounding.
    Twin fused(n * 2), apart(n * 2);
    fused.host = apart.host = half.host;
    fused.upload();
    apart.upload();
    Buffer sums(8, MemoryKind::device, kGpu, MemCategory::other);
    float* d_sums = static_cast<float*>(sums.data());
    add_sum_squares(kGpu, TensorView::flat(other.d(), t, n, kGpu), TensorView::flat(fused.d(), t, n, kGpu), d_sums);
    add(kGpu, TensorView::flat(other.d(), t, n, kGpu), TensorView::flat(apart.d(), t, n, kGpu));
    sum_squares(kGpu, TensorView::flat(apart.d(), t, n, kGpu), d_sums + 1);
    add_sum_squares(Device::cpu(), TensorView::flat(other.host.data(), t, n), TensorView::flat(fused.host.data(), t, n),
                    &cpu_sum);
    float got[2] = {};
    ZS_CHECK_CUDA(cudaMemcpy(got, d_sums, 8, cudaMemcpyDeviceToHost));
    EXPECT_EQ(fused.download(), apart.download()) << "add_sum_squares " << dtype_name(t);
    EXPECT_EQ(fused.download(), fused.host) << "add_sum_squares " << dtype_name(t);
    EXPECT_EQ(std::bit_cast<uint32_t>(got[0]), std::bit_cast<uint32_t>(got[1])) << "add_sum_squares " << dtype_name(t);
    EXPECT_NEAR(got[0], cpu_sum, 1e-5 * cpu_sum) << "add_sum_squares " << dtype_name(t);
  }
}

}  // namespace
}  // namespace zs::kernels
