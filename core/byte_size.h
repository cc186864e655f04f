// Byte sizes in text, both ways: as people write them on a command line, and as tools print them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace zs {

// "80", "80GiB", "85.9 GB", "512M", "1.5t" -> bytes. K, M, G, T, KiB, MiB, GiB and TiB are powers of 1024;
// KB, MB, GB and TB powers of 1000; B is bytes; case is ignored. A bare number counts in units of
// `bare_unit` bytes. nullopt unless the text is a finite number >= 0 followed by at most one of these units.
std::optional<double> parse_byte_size(std::string_view text, double bare_unit = 1.0);

// "512 B", "3.78 KiB", "28.62 GiB": binary units, two decimals.
std::string format_bytes(double bytes);

}  // namespace zs
