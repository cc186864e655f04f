// The CPU kernels compiled for scalar (flags set in kernels/CMakeLists.txt).
#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"

namespace zs::kernels::cpu {

const CpuTable& table_scalar() {
  static const CpuTable t{"scalar", &update, &cast, &scale, &add, &sum_squares, &add_sum_squares};
  return t;
}

}  // namespace zs::kernels::cpu
