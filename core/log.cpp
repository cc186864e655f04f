// The library's logger: stderr, rank prefix, level from the ZS_LOG environment variable.
#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <mutex>
#include <string>

namespace zs::log {
namespace {

std::shared_ptr<spdlog::logger> make_logger() {
  auto lg = std::make_shared<spdlog::logger>("zeroshard", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  const char* level = std::getenv("ZS_LOG");
  lg->set_level(level ? spdlog::level::from_str(level) : spdlog::level::warn);
  lg->set_pattern("[%H:%M:%S.%e] [zs] [%l] %v");
  return lg;
}

std::shared_ptr<spdlog::logger>& instance() {
  static std::shared_ptr<spdlog::logger> lg = make_logger();
  return lg;
}

}  // namespace

void set_rank(int rank) {
  instance()->set_pattern(fmt::format("[%H:%M:%S.%e] [zs rank {}] [%l] %v", rank));
}

spdlog::logger& logger() {
  return *instance();
}

void shutdown_failure(std::string_view context, const std::exception& e) {
  static std::mutex mu;
  static std::array<std::string, 8> seen;  // the latest messages, a ring
  static std::size_t next = 0;
  const std::string_view what = e.what();
  bool again = false;
  {
    std::lock_guard lk(mu);
    again = std::find(seen.begin(), seen.end(), what) != seen.end();
    if (!again) seen[next++ % seen.size()] = what;
  }
  if (again)
    debug("{} (logged above): {}", context, what);
  else
    warn("{}: {}", context, what);
}

}  // namespace zs::log
