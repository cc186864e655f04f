// Shared main for dist tests: join the job zsrun started, run the gtest suite on every rank.
#pragma once

#include "core/bootstrap.h"

namespace zs::test {
// The world group this process joined (valid inside TEST bodies).
ProcessGroup& pg();
}  // namespace zs::test
