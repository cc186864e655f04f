// DType parsing.
#include "core/dtype.h"

#include "core/error.h"

namespace zs {

DType dtype_parse(std::string_view n) {
  if (n == "f32" || n == "fp32" || n == "float32") return DType::f32;
  if (n == "bf16" || n == "bfloat16") return DType::bf16;
  if (n == "f16" || n == "fp16" || n == "float16") return DType::f16;
  if (n == "f64" || n == "fp64" || n == "float64") return DType::f64;
  ZS_FAIL("unknown dtype '{}': expected one of f32, bf16, f16, f64", n);
}

}  // namespace zs
