// What every gpu test shares: skipping, visibly, where no GPU is visible, and the lone process as two
// groups, Gloo (the CPU engine, the reference) and NCCL (the CUDA engine under test).
#pragma once

#include <gtest/gtest.h>

#include <utility>

#include "core/bootstrap.h"

#define ZS_REQUIRE_GPU()       \
  if (!::zs::cuda_available()) \
  GTEST_SKIP() << "no CUDA GPU visible: the gpu tests run on a GPU machine (bench/gpu/check.sh)"

namespace zs::test {

inline std::pair<ProcessGroup, ProcessGroup> cpu_and_gpu_groups() {
  ProcessGroupOptions go, no;
  go.backend = Backend::gloo;
  no.backend = Backend::nccl;
  ProcessGroup cpu = init_process_group(go);
  return {std::move(cpu), init_process_group(no)};
}

}  // namespace zs::test
