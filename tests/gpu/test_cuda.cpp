// GPU checks (label gpu): the CUDA Stream/Event and the NCCL backend at world 1; skipped without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstring>

#include "core/bootstrap.h"
#include "core/buffer.h"
#include "core/cuda_check.h"
#include "core/stream.h"
#include "tests/gpu/gpu_test.h"

namespace zs {
namespace {

// A chain of async copies across two streams, ordered only by events: the data must arrive intact.
TEST(CudaStream, EventsOrderCopiesAcrossStreams) {
  ZS_REQUIRE_GPU();
  const Device d = Device::cuda(0);
  const int64_t n = 1 << 22;
  std::vector<float> host(static_cast<std::size_t>(n)), back(static_cast<std::size_t>(n), 0.f);
  for (int64_t i = 0; i < n; ++i) host[static_cast<std::size_t>(i)] = static_cast<float>(i % 1000);
  Buffer a(n * 4, MemoryKind::device, d, MemCategory::other), b(n * 4, MemoryKind::device, d, MemCategory::other);
  auto s1 = make_stream(d), s2 = make_stream(d);
  auto e = make_event(d);
  for (int round = 0; round < 20; ++round) {
    s1->submit([&] {
      ZS_CHECK_CUDA(cudaMemcpyAsync(a.data(), host.data(), n * 4, cudaMemcpyHostToDevice,
                                    static_cast<cudaStream_t>(s1->native_handle())));
    });
    s1->record(*e);
    s2->wait(*e);
    s2->submit([&] {
      ZS_CHECK_CUDA(cudaMemcpyAsync(b.data(), a.data(), n * 4, cudaMemcpyDeviceToDevice,
                                    static_cast<cudaStream_t>(s2->native_handle())));
      ZS_CHECK_CUDA(cudaMemcpyAsync(back.data(), b.data(), n * 4, cudaMemcpyDeviceToHost,
                                    static_cast<cudaStream_t>(s2->native_handle())));
    });
    s2->synchronize();
    ASSERT_EQ(std::memcmp(back.data(), host.data(), static_cast<std::size_t>(n) * 4), 0) << "round " << round;
    std::fill(back.begin(), back.end(), 0.f);
    host[static_cast<std::size_t>(round)] += 1;
  }
  EXPECT_TRUE(e->query());
}

// A one-rank NCCL group copies instead of calling NCCL (core/comm_nccl.cpp), so this checks that path, every
// collective, op and dtype; NCCL's own kernels run only in groups of two or more GPUs.
TEST(Nccl, EveryCollectiveAtWorldOne) {
  ZS_REQUIRE_GPU();
  ProcessGroupOptions opts;
  opts.backend = Backend::nccl;
  ProcessGroup pg = init_process_group(opts);
  Comm& c = *pg.world;
  ASSERT_EQ(c.size(), 1);
  const Device d = c.device();
  // 49984 f32 values (a GPT block of d = 64) are where NCCL's one-rank kernel fell 12 short: 13 blocks of
  // floor(n / 13) rounded to whole 16-byte packs.
  for (auto [t, n] : {std::pair{DType::f32, int64_t{1000003}}, std::pair{DType::f32, int64_t{49984}},
                      std::pair{DType::bf16, int64_t{1000003}}, std::pair{DType::f16, int64_t{1000003}}}) {
    std::vector<uint8_t> host(static_cast<std::size_t>(n) * dtype_size(t)), out(host.size());
    for (int64_t i = 0; i < n; ++i)
      store_from_f32(host.data(), t, static_cast<std::size_t>(i), static_cast<float>(i % 13 - 6));
    Buffer in(host.size(), MemoryKind::device, d, MemCategory::other),
        res(host.size(), MemoryKind::device, d, MemCategory::other);
    ZS_CHECK_CUDA(cudaMemcpy(in.data(), host.data(), host.size(), cudaMemcpyHostToDevice));
    // The output starts as NaNs each time, so an element a collective leaves unwritten shows (NCCL before
    // 2.29.7 left the tail of an out-of-place one-rank reduction unwritten: NVIDIA/nccl#1950).
    auto poison = [&] { ZS_CHECK_CUDA(cudaMemset(res.data(), 0xff, host.size())); };
    auto check = [&](const char* what) {
      ZS_CHECK_CUDA(cudaMemcpy(out.data(), res.data(), out.size(), cudaMemcpyDeviceToHost));
      EXPECT_EQ(std::memcmp(out.data(), host.data(), host.size()), 0) << what << " " << dtype_name(t);
    };
    poison();
    c.all_gather(in.view(t, n), res.view(t, n)).wait();
    check("all_gather");
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      poison();
      c.reduce_scatter(in.view(t, n), res.view(t, n), op).wait();
      check("reduce_scatter");
      poison();
      c.all_reduce(in.view(t, n), res.view(t, n), op).wait();
      check("all_reduce");
    }
    ZS_CHECK_CUDA(cudaMemcpy(res.data(), in.data(), host.size(), cudaMemcpyDeviceToDevice));
    c.broadcast(res.view(t, n), 0).wait();
    check("broadcast");
  }
  c.barrier().wait();
  // A host scalar (an app's loss) through the group's device memory.
  EXPECT_EQ(c.all_reduce_value(2.5f, ReduceOp::sum), 2.5f);
  EXPECT_EQ(c.all_reduce_value(-1.0f, ReduceOp::avg), -1.0f);
}

}  // namespace
}  // namespace zs
