// Formatting of zs::Error messages.
#include "core/error.h"

#include <cstring>

namespace zs::detail {

void throw_error(const char* file, int line, const std::string& library, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  std::string where = fmt::format("{}:{}", base ? base + 1 : file, line);
  if (library.empty()) throw Error(fmt::format("{} [{}]", msg, where));
  throw Error(fmt::format("{} error: {} [{}]", library, msg, where));
}

std::string sys_error_string(int err) {
  char buf[256];
  return std::string(strerror_r(err, buf, sizeof buf));
}

}  // namespace zs::detail
