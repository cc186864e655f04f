// The kernels' one dispatch API: optimizer updates, casts, scaling, reductions and packing over flat
// contiguous shards, on CPU (SIMD + threads) or CUDA, chosen by the Device.
//
// Execution: on CPU a call runs now, on the calling thread plus the kernel thread pool (call it from
// a stream's closure when it must be ordered with other work). On CUDA it is enqueued on `stream`
// (nullptr: the legacy default stream) and the launch is checked.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "core/device.h"
#include "core/dtype.h"
#include "core/stream.h"
#include "core/tensor_view.h"

namespace zs::kernels {

// Elements [begin, end) of a shard. Lists of ranges are sorted and disjoint.
struct ElementRange {
  int64_t begin = 0;
  int64_t end = 0;
};

enum class Optimizer : uint8_t { adamw, adam, sgd, lion };

constexpr std::string_view optimizer_name(Optimizer o) {
  switch (o) {
    case Optimizer::adamw:
      return "adamw";
    case Optimizer::adam:
      return "adam";
    case Optimizer::sgd:
      return "sgd";
    case Optimizer::lion:
      return "lion";
  }
  return "?";
}

// The optimizer optimizer_name() spells `name`, if any.
constexpr std::optional<Optimizer> optimizer_parse(std::string_view name) {
  for (Optimizer o : {Optimizer::adamw, Optimizer::adam, Optimizer::sgd, Optimizer::lion})
    if (optimizer_name(o) == name) return o;
  return std::nullopt;
}

struct OptimizerHyper {
  Optimizer kind = Optimizer::adamw;
  float lr = 1e-3f;
  float beta1 = 0.9f;  // SGD: momentum
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // AdamW and Lion: decoupled; Adam and SGD: L2 (added to the gradient)
  float dampening = 0.0f;     // SGD
  bool nesterov = false;      // SGD
  int64_t step = 1;           // 1-based; Adam bias correction, SGD's first-step momentum initialisation
};

// One shard's update. param is the fp32 master (or the fp32 parameter); grad is multiplied by grad_scale
// on load, so averaging, loss-scale removal and clipping cost no extra pass. state1/state2: Adam m and v,
// SGD momentum (state1; may be null when momentum is 0), Lion m (state1); f32, or bf16 for Adam/Lion.
// param_out, when set, receives the updated parameter in param_out_dtype in the same pass.
// Weight decay applies only inside decay_ranges (which live in the device's memory).
struct UpdateArgs {
  int64_t n = 0;
  float* param = nullptr;
  const void* grad = nullptr;
  DType grad_dtype = DType::f32;
  float grad_scale = 1.0f;
  void* state1 = nullptr;
  void* state2 = nullptr;
  DType state_dtype = DType::f32;
  void* param_out = nullptr;
  DType param_out_dtype = DType::bf16;
  const ElementRange* decay_ranges = nullptr;
  int64_t num_decay_ranges = 0;
};

// Bytes the update must move per element (reads + writes), for bandwidth accounting in benchmarks.
int64_t update_bytes_per_element(const UpdateArgs& a);

void optimizer_update(Device device, const OptimizerHyper& h, const UpdateArgs& a, Stream* stream = nullptr);

// dst = src converted (f32 <-> bf16/f16, or a plain copy); round-to-nearest-even, NaN and Inf kept.
void cast(Device device, TensorView src, TensorView dst, Stream* stream = nullptr);

// x *= alpha in place. When found_nonfinite is set (one float in the device's memory), it is set to 1
// if any scaled value is NaN or Inf and left as it is otherwise (clear it before a batch of calls).
void scale(Device device, TensorView x, float alpha, float* found_nonfinite = nullptr, Stream* stream = nullptr);

// dst += src, elementwise; the same dtype and count (a sum in f32, rounded to nearest even for bf16/f16).
// Accumulates each micro-batch's reduced gradient shard.
void add(Device device, TensorView src, TensorView dst, Stream* stream = nullptr);

// *out = sum of x^2 (one float in the device's memory), accumulated in f32 per tile and deterministic for
// a given size (and, on CUDA, device).
void sum_squares(Device device, TensorView x, float* out, Stream* stream = nullptr);

// add, then *out = sum of the new dst^2, in one pass over dst: the same bits as add followed by sum_squares
// (on CUDA too). Completes an accumulated gradient shard and takes its share of the norm.
void add_sum_squares(Device device, TensorView src, TensorView dst, float* out, Stream* stream = nullptr);

// Copies each tensor to its element offset in a flat buffer (pack) or back (unpack); same dtypes.
void pack(Device device, std::span<const TensorView> tensors, std::span<const int64_t> offsets, TensorView flat,
          Stream* stream = nullptr);
void unpack(Device device, TensorView flat, std::span<const int64_t> offsets, std::span<const TensorView> tensors,
            Stream* stream = nullptr);

// CPU kernel threads (default: the machine's cores, or ZS_CPU_THREADS) and instruction set
// ("avx512", "avx2" or "scalar"; chosen from the running CPU, or forced with ZS_CPU_ISA).
void set_cpu_threads(int n);
// The same unless ZS_CPU_THREADS chose the count (a library's default yields to the user's choice).
void set_default_cpu_threads(int n);
int cpu_threads();
const char* cpu_isa();
void set_cpu_isa(const char* name);  // for tests and benchmarks: throws if the CPU lacks it

}  // namespace zs::kernels
