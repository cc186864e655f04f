// Shared main for dist tests: join the job zsrun started, run the gtest suite on every rank.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/bootstrap.h"

namespace zs::test {
// The world group this process joined (valid inside TEST bodies).
ProcessGroup& pg();

// A directory every rank of this job agrees on (the job token is per job): temp/<prefix><token>.
inline std::filesystem::path job_dir(const std::string& prefix) {
  const char* token = std::getenv("ZS_JOB_TOKEN");
  return std::filesystem::temp_directory_path() / (prefix + std::string(token ? token : "solo").substr(0, 12));
}
}  // namespace zs::test
