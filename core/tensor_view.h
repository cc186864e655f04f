// TensorView: a non-owning {pointer, dtype, shape, device}; the currency of the kernels and collectives.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>

#include "core/device.h"
#include "core/dtype.h"

namespace zs {

// Up to 8 dimensions, stored inline so a view never allocates.
struct Shape {
  static constexpr int kMaxDims = 8;
  std::array<int64_t, kMaxDims> dims{};
  int ndim = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  explicit Shape(std::span<const int64_t> d);
  int64_t numel() const;
  int64_t operator[](int i) const { return dims[static_cast<std::size_t>(i)]; }
  friend bool operator==(const Shape& a, const Shape& b);
};

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape;
  Device device;

  // A 1-D view of `n` elements.
  static TensorView flat(void* data, DType dtype, int64_t n, Device device = Device::cpu());

  int64_t numel() const { return shape.numel(); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // Elements [offset, offset + n) as a 1-D view.
  TensorView slice(int64_t offset, int64_t n) const;
};

}  // namespace zs
