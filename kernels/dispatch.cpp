// Kernel dispatch: CPU (ISA chosen at run time, tiles over the thread pool, weight-decay runs) or CUDA.
#include <cpuid.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/cpu_table.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/decay_segments.h"
#include "kernels/kernels.h"
#include "kernels/update_scalars.h"
#ifdef ZS_WITH_CUDA
#include "core/cuda_check.h"
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace zs::kernels {
namespace {

// Elements per work item of the pool: large enough to amortise the claim, small enough to balance.
constexpr int64_t kTile = int64_t{1} << 15;

// F16C from CPUID directly (clang's __builtin_cpu_supports does not know it).
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

bool cpu_has(const char* isa) {
  if (std::strcmp(isa, "scalar") == 0) return true;
  if (std::strcmp(isa, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
  if (std::strcmp(isa, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && has_f16c();
  return false;
}

const cpu::CpuTable* table_for(const char* isa) {
  if (std::strcmp(isa, "avx512") == 0) return &cpu::table_avx512();
  if (std::strcmp(isa, "avx2") == 0) return &cpu::table_avx2();
  if (std::strcmp(isa, "scalar") == 0) return &cpu::table_scalar();
  ZS_FAIL("unknown CPU instruction set '{}': expected avx512, avx2 or scalar", isa);
}

const cpu::CpuTable* best_table() {
  if (const char* forced = std::getenv("ZS_CPU_ISA")) {
    ZS_CHECK(cpu_has(forced), "ZS_CPU_ISA={} but this CPU does not support it", forced);
    return table_for(forced);
  }
  for (const char* isa : {"avx512", "avx2"})
    if (cpu_has(isa)) return table_for(isa);
  return &cpu::table_scalar();
}

std::atomic<const cpu::CpuTable*>& current() {
  static std::atomic<const cpu::CpuTable*> t{best_table()};
  return t;
}

const cpu::CpuTable& table() {
  return *current().load(std::memory_order_relaxed);
}

int64_t tiles(int64_t n) {
  return (n + kTile - 1) / kTile;
}

template <typename F>
void for_tiles(int64_t n, F&& f) {
  cpu::ThreadPool::instance().parallel_for(tiles(n), [&](int64_t t) { f(t * kTile, std::min(n, (t + 1) * kTile)); });
}

#ifdef ZS_WITH_CUDA
cudaStream_t cuda_stream(Stream* s) {
  return s ? static_cast<cudaStream_t>(s->native_handle()) : nullptr;
}
#endif

void check_same_device(Device device, const TensorView& v, const char* what, const char* op) {
  ZS_CHECK(v.device == device, "{}: {} lives on {} but the kernel runs on {}", op, what, v.device.str(), device.str());
}

void check_float(DType t, const char* what, const char* op) {
  ZS_CHECK(t == DType::f32 || t == DType::bf16 || t == DType::f16, "{}: {} must be f32, bf16 or f16, got {}", op, what,
           dtype_name(t));
}

// Per-tile partials of f over [0, n), combined in tile order: the result does not depend on the thread count.
template <typename F>
float sum_of_tiles(int64_t n, F&& f) {
  thread_local std::vector<float> partial;
  const int64_t nt = tiles(n);
  if (static_cast<int64_t>(partial.size()) < nt) partial.resize(static_cast<std::size_t>(nt));
  float* parts = partial.data();
  for_tiles(n, [&](int64_t b, int64_t e) { parts[b / kTile] = f(b, e); });
  double total = 0.0;
  for (int64_t i = 0; i < nt; ++i) total += parts[i];
  return static_cast<float>(total);
}

void check_add(Device device, const TensorView& src, const TensorView& dst, const char* op) {
  check_float(src.dtype, "the source", op);
  check_same_device(device, src, "the source", op);
  check_same_device(device, dst, "the destination", op);
  ZS_CHECK(src.dtype == dst.dtype && src.numel() == dst.numel(), "{}: source is {} x {}, destination {} x {}", op,
           src.numel(), dtype_name(src.dtype), dst.numel(), dtype_name(dst.dtype));
}
}  // namespace

int64_t update_bytes_per_element(const UpdateArgs& a) {
  const int64_t states = a.state2 ? 2 : a.state1 ? 1 : 0;
  int64_t bytes = 4 + 4 + static_cast<int64_t>(dtype_size(a.grad_dtype));  // param read+write, grad read
  bytes += states * 2 * static_cast<int64_t>(dtype_size(a.state_dtype));
  if (a.param_out) bytes += static_cast<int64_t>(dtype_size(a.param_out_dtype));
  return bytes;
}

void optimizer_update(Device device, const OptimizerHyper& h, const UpdateArgs& a, Stream* stream) {
  const char* op = "optimizer update";
  check_float(a.grad_dtype, "the gradient", op);
  ZS_CHECK(a.state_dtype == DType::f32 || a.state_dtype == DType::bf16,
           "{}: optimizer state must be f32 or bf16, got {}", op, dtype_name(a.state_dtype));
  ZS_CHECK(!a.param_out || a.param_out_dtype != DType::f64, "{}: param_out must be f32, bf16 or f16", op);
  const bool adam = h.kind == Optimizer::adamw || h.kind == Optimizer::adam;
  ZS_CHECK(!adam || (a.state1 && a.state2), "{}: Adam needs both moment buffers (state1 = m, state2 = v)", op);
  ZS_CHECK(h.kind != Optimizer::lion || a.state1, "{}: Lion needs its momentum buffer (state1)", op);
  ZS_CHECK(h.kind != Optimizer::sgd || h.beta1 == 0.0f || a.state1,
           "{}: SGD with momentum {} needs a momentum buffer (state1)", op, h.beta1);
  ZS_CHECK(h.kind != Optimizer::sgd || a.state_dtype == DType::f32, "{}: SGD keeps its momentum in f32", op);
  if (a.n == 0) return;
  const UpdateScalars s = make_scalars(h, a);
  UpdateArgs args = a;
  if (h.kind == Optimizer::sgd && h.beta1 == 0.0f) args.state1 = nullptr;  // plain SGD keeps no buffer
  if (device.is_cpu()) {
    const auto& t = table();
    for_tiles(a.n, [&](int64_t b, int64_t e) {
      for_decay_segments(a.decay_ranges, a.num_decay_ranges, b, e,
                         [&](int64_t sb, int64_t se, bool decay) { t.update(s, args, sb, se, decay); });
    });
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::update(s, args, cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

void cast(Device device, TensorView src, TensorView dst, Stream* stream) {
  const char* op = "cast";
  check_float(src.dtype, "the source", op);
  check_float(dst.dtype, "the destination", op);
  check_same_device(device, src, "the source", op);
  check_same_device(device, dst, "the destination", op);
  ZS_CHECK(src.numel() == dst.numel(), "{}: source has {} elements, destination {}", op, src.numel(), dst.numel());
  if (device.is_cpu()) {
    const auto& t = table();
    for_tiles(src.numel(), [&](int64_t b, int64_t e) { t.cast(src.data, src.dtype, dst.data, dst.dtype, b, e); });
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::cast(src.data, src.dtype, dst.data, dst.dtype, src.numel(), cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

void scale(Device device, TensorView x, float alpha, float* found_nonfinite, Stream* stream) {
  const char* op = "scale";
  check_float(x.dtype, "the tensor", op);
  check_same_device(device, x, "the tensor", op);
  if (device.is_cpu()) {
    const auto& t = table();
    std::atomic<bool> bad{false};
    for_tiles(x.numel(), [&](int64_t b, int64_t e) {
      if (t.scale(x.data, x.dtype, alpha, b, e)) bad.store(true, std::memory_order_relaxed);
    });
    if (found_nonfinite && bad.load()) *found_nonfinite = 1.0f;
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::scale(x.data, x.dtype, alpha, x.numel(), found_nonfinite, cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

void add(Device device, TensorView src, TensorView dst, Stream* stream) {
  const char* op = "add";
  check_add(device, src, dst, op);
  if (device.is_cpu()) {
    const auto& t = table();
    for_tiles(src.numel(), [&](int64_t b, int64_t e) { t.add(src.data, dst.data, dst.dtype, b, e); });
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::add(src.data, dst.data, dst.dtype, dst.numel(), cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

void sum_squares(Device device, TensorView x, float* out, Stream* stream) {
  const char* op = "sum of squares";
  check_float(x.dtype, "the tensor", op);
  check_same_device(device, x, "the tensor", op);
  if (device.is_cpu()) {
    const auto& t = table();
    *out = sum_of_tiles(x.numel(), [&](int64_t b, int64_t e) { return t.sum_squares(x.data, x.dtype, b, e); });
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::sum_squares(x.data, x.dtype, x.numel(), out, cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

void add_sum_squares(Device device, TensorView src, TensorView dst, float* out, Stream* stream) {
  const char* op = "add and sum of squares";
  check_add(device, src, dst, op);
  if (device.is_cpu()) {
    const auto& t = table();
    *out = sum_of_tiles(dst.numel(),
                        [&](int64_t b, int64_t e) { return t.add_sum_squares(src.data, dst.data, dst.dtype, b, e); });
    return;
  }
#ifdef ZS_WITH_CUDA
  cuda::add_sum_squares(src.data, dst.data, dst.dtype, dst.numel(), out, cuda_stream(stream));
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}

namespace {
void copy_slices(Device device, std::span<const TensorView> tensors, std::span<const int64_t> offsets, TensorView flat,
                 bool to_flat, Stream* stream) {
  const char* op = to_flat ? "pack" : "unpack";
  ZS_CHECK(tensors.size() == offsets.size(), "{}: {} tensors but {} offsets", op, tensors.size(), offsets.size());
  check_same_device(device, flat, "the flat buffer", op);
  const std::size_t es = dtype_size(flat.dtype);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    check_same_device(device, t, "a tensor", op);
    ZS_CHECK(t.dtype == flat.dtype, "{}: tensor {} is {} but the flat buffer is {}", op, i, dtype_name(t.dtype),
             dtype_name(flat.dtype));
    ZS_CHECK(offsets[i] >= 0 && offsets[i] + t.numel() <= flat.numel(),
             "{}: tensor {} ({} elements at offset {}) does not fit the flat buffer of {} elements", op, i, t.numel(),
             offsets[i], flat.numel());
  }
  if (device.is_cpu()) {
    cpu::ThreadPool::instance().parallel_for(static_cast<int64_t>(tensors.size()), [&](int64_t i) {
      const auto k = static_cast<std::size_t>(i);
      char* slot = static_cast<char*>(flat.data) + static_cast<std::size_t>(offsets[k]) * es;
      if (to_flat)
        std::memcpy(slot, tensors[k].data, tensors[k].bytes());
      else
        std::memcpy(tensors[k].data, slot, tensors[k].bytes());
    });
    return;
  }
#ifdef ZS_WITH_CUDA
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    char* slot = static_cast<char*>(flat.data) + static_cast<std::size_t>(offsets[k]) * es;
    ZS_CHECK_CUDA(cudaMemcpyAsync(to_flat ? slot : tensors[k].data, to_flat ? tensors[k].data : slot,
                                  tensors[k].bytes(), cudaMemcpyDeviceToDevice, cuda_stream(stream)));
  }
#else
  ZS_FAIL("{} on {}: this build has no CUDA support", op, device.str());
#endif
}
}  // namespace

void pack(Device device, std::span<const TensorView> tensors, std::span<const int64_t> offsets, TensorView flat,
          Stream* stream) {
  copy_slices(device, tensors, offsets, flat, true, stream);
}

void unpack(Device device, TensorView flat, std::span<const int64_t> offsets, std::span<const TensorView> tensors,
            Stream* stream) {
  copy_slices(device, tensors, offsets, flat, false, stream);
}

void set_cpu_threads(int n) {
  cpu::ThreadPool::instance().set_threads(n);
}
void set_default_cpu_threads(int n) {
  cpu::ThreadPool::instance().set_default_threads(n);
}
int cpu_threads() {
  return cpu::ThreadPool::instance().threads();
}
const char* cpu_isa() {
  return table().name;
}
void set_cpu_isa(const char* name) {
  ZS_CHECK(cpu_has(name), "this CPU does not support the '{}' kernels", name);
  current().store(table_for(name));
}

}  // namespace zs::kernels
