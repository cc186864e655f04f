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

// Every unaligned form, plain, array and nothrow (std::get_temporary_buffer, behind std::stable_sort, takes
// the nothrow one), so each allocation and its release go through the same pair.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  zs::test::g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void* operator new(std::size_t n) {
  if (void* p = operator new(n, std::nothrow)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return operator new(n, std::nothrow);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
