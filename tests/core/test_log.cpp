// The logger's one rule beyond spdlog: a failure met again while shutting down is logged once.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>
#include <stdexcept>

#include "core/log.h"

namespace zs {
namespace {

TEST(Log, AShutdownFailureIsWarnedOnceHoweverManyLayersMeetIt) {
  std::ostringstream os;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(os);
  sink->set_pattern("%l %v");
  sink->set_level(spdlog::level::warn);  // as by default, whatever ZS_LOG says
  auto& sinks = log::logger().sinks();
  sinks.push_back(sink);
  const std::runtime_error disk("writing of unit 'head' failed: File too large"), other("peer 3 is gone");
  log::shutdown_failure("engine shutdown after a failure", disk);
  log::shutdown_failure("offload: the CPU step failed while shutting down", disk);
  log::shutdown_failure("offload: the file of the gradients failed while shutting down", disk);
  log::shutdown_failure("engine shutdown after a failure", other);
  sinks.pop_back();
  EXPECT_EQ(os.str(),
            "warning engine shutdown after a failure: writing of unit 'head' failed: File too large\n"
            "warning engine shutdown after a failure: peer 3 is gone\n");
}

}  // namespace
}  // namespace zs
