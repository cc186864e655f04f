// Fuzz target: a weights index (model.safetensors.index.json). Parsing must give (tensor, file) pairs whose
// files are plain names, which written back as an index parse to the same pairs, or a zs::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "runtime/weight_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto pairs = zs::parse_weights_index(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    nlohmann::json map = nlohmann::json::object();
    for (const auto& [name, file] : pairs) {
      if (file.empty() || file.find('/') != std::string::npos) std::abort();
      map[name] = file;
    }
    if (zs::parse_weights_index(nlohmann::json{{"weight_map", map}}.dump(), "fuzz again") != pairs) std::abort();
  } catch (const zs::Error&) {
  }
  return 0;
}
