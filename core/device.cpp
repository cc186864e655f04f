// Device names.
#include "core/device.h"

#include <charconv>

#include "core/error.h"

namespace zs {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : fmt::format("cuda:{}", index);
}

Device Device::parse(std::string_view s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.starts_with("cuda:")) {
    int i = -1;
    auto digits = s.substr(5);
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), i);
    if (ec == std::errc() && p == digits.data() + digits.size() && i >= 0) return cuda(i);
  }
  ZS_FAIL("unknown device '{}': expected cpu, cuda or cuda:N", s);
}

}  // namespace zs
