// The engine on CUDA + NCCL at world 1 against the same run on CPU + Gloo (label gpu): the kernels are
// bit-identical twins and a one-rank reduction changes nothing, so the parameters must agree to f32 rounding.
#include <gtest/gtest.h>

#include "core/bootstrap.h"
#include "tests/dist/engine_harness.h"

namespace zs {
namespace {

using namespace test;

TEST(EngineCuda, MatchesTheCpuEngineAtWorldOne) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible: the gpu tests run on a GPU machine (bench/gpu/check.sh)";
  ProcessGroupOptions go, no;
  go.backend = Backend::gloo;
  no.backend = Backend::nccl;
  ProcessGroup cpu_pg = init_process_group(go);
  ProcessGroup gpu_pg = init_process_group(no);
  for (const Case& c :
       {Case{0, DType::f32, 0, 1, 0.0f}, Case{3, DType::f32, 2, 1, 0.0f}, Case{3, DType::bf16, 2, 3, 0.0f}}) {
    Engine on_cpu(make_config(c), *cpu_pg.world);
    Engine on_gpu(make_config(c), *gpu_pg.world);
    ASSERT_TRUE(on_gpu.device().is_cuda());
    const Trajectory a = train(c, on_cpu, 10), b = train(c, on_gpu, 10);
    EXPECT_LE(worst_rms_error(b.params, a.params), 1e-6) << name(c, 1);
    for (std::size_t k = 0; k < a.losses.size(); ++k) EXPECT_NEAR(b.losses[k], a.losses[k], 1e-5 * a.losses[k]) << k;
  }
}

}  // namespace
}  // namespace zs
