// The CPU kernels compiled for avx512 (flags set in kernels/CMakeLists.txt).
#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"

namespace zs::kernels::cpu {

const CpuTable& table_avx512() {
  static const CpuTable t{"avx512", &update, &cast, &scale, &add, &sum_squares, &add_sum_squares};
  return t;
}

}  // namespace zs::kernels::cpu
