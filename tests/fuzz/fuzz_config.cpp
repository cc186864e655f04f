// Fuzz target: YAML text -> Config. Any input must give a Config or a zs::Error, never a crash or a leak.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "runtime/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    zs::Config::from_yaml(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const zs::Error&) {
  }
  return 0;
}
