// Shape arithmetic and TensorView slicing.
#include "core/tensor_view.h"

#include "core/error.h"

namespace zs {

Shape::Shape(std::initializer_list<int64_t> d) : Shape(std::span<const int64_t>(d.begin(), d.size())) {}

Shape::Shape(std::span<const int64_t> d) {
  ZS_CHECK(d.size() <= kMaxDims, "a shape has at most {} dimensions, got {}", kMaxDims, d.size());
  for (int64_t v : d) {
    ZS_CHECK(v >= 0, "shape dimensions must be >= 0, got {}", v);
    dims[static_cast<std::size_t>(ndim++)] = v;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= dims[static_cast<std::size_t>(i)];
  return n;
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

TensorView TensorView::flat(void* data, DType dtype, int64_t n, Device device) {
  return TensorView{data, dtype, Shape{n}, device};
}

TensorView TensorView::slice(int64_t offset, int64_t n) const {
  ZS_CHECK(offset >= 0 && n >= 0 && offset + n <= numel(), "slice [{}, {}) is outside a tensor of {} elements", offset,
           offset + n, numel());
  return flat(static_cast<char*>(data) + static_cast<std::size_t>(offset) * dtype_size(dtype), dtype, n, device);
}

}  // namespace zs
