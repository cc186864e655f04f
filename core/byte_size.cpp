// Byte sizes in text: parse_byte_size and format_bytes.
#include "core/byte_size.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>

namespace zs {

std::optional<double> parse_byte_size(std::string_view text, double bare_unit) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || !std::isfinite(value) || value < 0) return std::nullopt;
  std::string unit;  // what follows the number, after any spaces: one word, any case
  for (const char* c = end; c != text.data() + text.size(); ++c)
    if (!unit.empty() || !std::isspace(static_cast<unsigned char>(*c)))
      unit += static_cast<char>(std::tolower(static_cast<unsigned char>(*c)));
  if (unit.empty()) return value * bare_unit;
  if (unit == "b") return value;
  // k, m, g, t: alone or with "ib" powers of 1024, with "b" powers of 1000.
  const std::size_t power = std::string_view("kmgt").find(unit[0]) + 1;  // 0: not a prefix
  const std::string_view suffix = std::string_view(unit).substr(1);
  if (power == 0 || !(suffix.empty() || suffix == "ib" || suffix == "b")) return std::nullopt;
  for (std::size_t i = 0; i < power; ++i) value *= suffix == "b" ? 1000.0 : 1024.0;
  return value;
}

std::string format_bytes(double bytes) {
  static constexpr std::array<const char*, 5> kUnit{"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t i = 0;
  while (std::fabs(bytes) >= 1024 && i + 1 < kUnit.size()) {
    bytes /= 1024;
    ++i;
  }
  return i == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, kUnit[i]);
}

}  // namespace zs
