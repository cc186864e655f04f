// gtest main for tests launched by zsrun: every rank runs the same tests in the same order.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/dist/dist_main.h"

namespace zs::test {
namespace {
ProcessGroup* g_pg = nullptr;
}
ProcessGroup& pg() {
  return *g_pg;
}
}  // namespace zs::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  try {
    zs::ProcessGroupOptions opts;
    opts.backend = zs::Backend::gloo;
    zs::ProcessGroup pg = zs::init_process_group(opts);
    zs::test::g_pg = &pg;
    int rc = RUN_ALL_TESTS();
    pg.world->barrier().wait();  // nobody tears the group down while a peer still needs it
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist test: %s\n", e.what());
    return 1;
  }
}
