// The CPU kernels of one instruction set, as a table of functions over an element range [b, e).
// Tiling, threads and weight-decay segmentation are the dispatcher's; these loops only compute.
#pragma once

#include "kernels/update_scalars.h"

namespace zs::kernels::cpu {

struct CpuTable {
  const char* name;
  // decay: whether weight decay applies to every element of [b, e).
  void (*update)(const UpdateScalars& s, const UpdateArgs& a, int64_t b, int64_t e, bool decay);
  void (*cast)(const void* src, DType st, void* dst, DType dt, int64_t b, int64_t e);
  // Returns true when a scaled value is NaN or Inf.
  bool (*scale)(void* x, DType t, float alpha, int64_t b, int64_t e);
  // dst += src, both of dtype t, summed in f32 (rounded once to t).
  void (*add)(const void* src, void* dst, DType t, int64_t b, int64_t e);
  // Sum of squares of [b, e) in f32 with 16 interleaved accumulators: the same order on every ISA.
  float (*sum_squares)(const void* x, DType t, int64_t b, int64_t e);
  // add, then sum_squares of the result, in one pass: the same bits as the two.
  float (*add_sum_squares)(const void* src, void* dst, DType t, int64_t b, int64_t e);
};

const CpuTable& table_scalar();
const CpuTable& table_avx2();
const CpuTable& table_avx512();

}  // namespace zs::kernels::cpu
