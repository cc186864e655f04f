// Fuzz target: checkpoint manifest text. Parsing must give a validated Manifest (whose JSON parses back to
// the same) or a zs::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "runtime/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const zs::ckpt::Manifest m =
        zs::ckpt::parse_manifest(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    const std::string text = zs::ckpt::to_json(m);
    if (zs::ckpt::to_json(zs::ckpt::parse_manifest(text, "fuzz again")) != text) std::abort();
  } catch (const zs::Error&) {
  }
  return 0;
}
