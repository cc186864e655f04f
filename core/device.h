// Device: where memory lives and work runs, `cpu` or `cuda:N`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace zs {

struct Device {
  enum class Kind : uint8_t { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;

  static constexpr Device cpu() { return {Kind::cpu, 0}; }
  static constexpr Device cuda(int i) { return {Kind::cuda, i}; }
  constexpr bool is_cpu() const { return kind == Kind::cpu; }
  constexpr bool is_cuda() const { return kind == Kind::cuda; }
  friend constexpr bool operator==(const Device&, const Device&) = default;

  std::string str() const;
  // "cpu", "cuda" (device 0) or "cuda:N"; throws zs::Error otherwise.
  static Device parse(std::string_view s);
};

}  // namespace zs
