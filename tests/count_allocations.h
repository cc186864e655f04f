// Counts every operator new of a test binary, for the tests that hold a hot path to no allocation.
// Include it in exactly one source file of the binary: it replaces the global operator new and delete.
// (GCC takes the replaced pair for a mismatch.)
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace zs::test {
// Allocations made so far by any thread of this process.
inline std::atomic<int64_t> g_allocations{0};
}  // namespace zs::test

void* operator new(std::size_t n) {
  zs::test::g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
