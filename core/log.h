// Logging: one spdlog logger with a rank prefix; level from ZS_LOG (trace, debug, info, warn, error, off).
#pragma once

#include <spdlog/spdlog.h>

#include <exception>
#include <string_view>

namespace zs::log {

// Sets the "[rank N]" prefix; safe to call again when the rank becomes known. Logs go to stderr.
void set_rank(int rank);
spdlog::logger& logger();

template <typename... Args>
void info(spdlog::format_string_t<Args...> f, Args&&... a) {
  logger().info(f, std::forward<Args>(a)...);
}
template <typename... Args>
void warn(spdlog::format_string_t<Args...> f, Args&&... a) {
  logger().warn(f, std::forward<Args>(a)...);
}
template <typename... Args>
void error(spdlog::format_string_t<Args...> f, Args&&... a) {
  logger().error(f, std::forward<Args>(a)...);
}
template <typename... Args>
void debug(spdlog::format_string_t<Args...> f, Args&&... a) {
  logger().debug(f, std::forward<Args>(a)...);
}

// A failure met by a destructor that finishes work in flight: a warning "<context>: <what>", once per
// message in the process, so that when the engine, its offload pipeline and a swap file below it all meet
// the same failure while shutting down, it is logged by the first (the outermost) only; the others' at
// debug level.
void shutdown_failure(std::string_view context, const std::exception& e);

}  // namespace zs::log
