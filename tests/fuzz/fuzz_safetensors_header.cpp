// Fuzz target: a safetensors header. The first 8 bytes give the size of the data section, the rest is the
// JSON header; every accepted tensor must lie inside the data and match its shape and dtype.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t data_bytes = 0;
  std::memcpy(&data_bytes, data, 8);
  data_bytes %= uint64_t{1} << 40;
  try {
    const auto tensors = zs::parse_safetensors_header(
        std::string_view(reinterpret_cast<const char*>(data + 8), size - 8), data_bytes, "fuzz");
    for (const auto& t : tensors)
      if (t.begin > t.end || t.end > data_bytes ||
          t.end - t.begin != static_cast<uint64_t>(t.numel()) * zs::dtype_size(t.dtype))
        std::abort();
  } catch (const zs::Error&) {
  }
  return 0;
}
