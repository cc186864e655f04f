// zs::Error and the ZS_CHECK family: every failure in the library becomes one exception type with context.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace zs {

// The one exception type the library throws. Messages name the rank, the unit or tensor, the operation
// and what to do; `where` is file:line of the check that fired.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& library, const std::string& msg);
std::string sys_error_string(int err);
}  // namespace detail

}  // namespace zs

// The generic check: when `cond` is false, throw zs::Error with a formatted message and file:line.
#define ZS_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) [[unlikely]]                                                        \
      ::zs::detail::throw_error(__FILE__, __LINE__, "", ::fmt::format(__VA_ARGS__)); \
  } while (0)

#define ZS_FAIL(...) ::zs::detail::throw_error(__FILE__, __LINE__, "", ::fmt::format(__VA_ARGS__))

// System calls: `expr` returns -1 and sets errno on failure. Evaluates to the call's result.
#define ZS_CHECK_SYS(expr, ...)                                                                                    \
  ([&]() {                                                                                                         \
    auto zs_rc_ = (expr);                                                                                          \
    if (zs_rc_ == -1) [[unlikely]]                                                                                 \
      ::zs::detail::throw_error(                                                                                   \
          __FILE__, __LINE__, "system",                                                                            \
          ::fmt::format("{}: {} ({})", ::fmt::format(__VA_ARGS__), #expr, ::zs::detail::sys_error_string(errno))); \
    return zs_rc_;                                                                                                 \
  }())
