// SwapFile: one rank's file on a local disk, for what does not fit in host memory (offload.optimizer: nvme,
// the optimizer's state; offload.params: nvme, the parameters). It is created under a unique name and
// unlinked at once, so nothing outlives the process, even a SIGKILL; it is allocated in full up front, so a
// full disk is an error at start-up (naming the bytes needed and free), not in step 1000; it is opened with
// O_DIRECT where the filesystem allows it, so what it holds does not come back into host memory as page
// cache. Offsets, lengths and buffers are then 4 KiB aligned (swap_aligned).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace zs::offload {

inline constexpr int64_t kSwapAlignment = 4096;  // O_DIRECT's: offsets, lengths and buffers

constexpr int64_t swap_aligned(int64_t bytes) {
  return (bytes + kSwapAlignment - 1) / kSwapAlignment * kSwapAlignment;
}

// One unit's region of a file: its parts (the optimizer state's master, m, v, 0 bytes where the optimizer
// keeps no such state; the parameters' shard alone) one after the other, each at a 4 KiB aligned offset.
// Pure.
struct SwapRegion {
  std::array<int64_t, 3> bytes{};
  std::array<int64_t, 3> offset{};
  int64_t size = 0;  // a multiple of 4 KiB
};
SwapRegion swap_region(int64_t master, int64_t m, int64_t v);
// The file's bytes (the regions one after the other), and the host bytes of `count` buffers of the
// largest region, with the slack to align the first to 4 KiB. Pure.
int64_t swap_file_bytes(std::span<const SwapRegion> regions);
int64_t swap_buffer_bytes(std::span<const SwapRegion> regions, int count);
// Each region's offset in the file, and the file's size last. Pure.
std::vector<int64_t> swap_offsets(std::span<const SwapRegion> regions);

// The first 4 KiB boundary at or after p (host buffers are allocated with kSwapAlignment bytes of slack).
char* swap_aligned(void* p);

// How a swap's errors name unit u: "unit 'NAME'" from `names` (the engine's unit names, by region), or
// "unit U" when there are none. Pure.
std::string swap_unit(std::span<const std::string> names, int u);

// `count` when it is at least 2 (a buffer in I/O while another is in use); else throws naming `setting`.
int at_least_two(int count, const char* setting);

class SwapFile {
 public:
  // What the file is for, in its errors: the setting that asked for it ("offload.optimizer: nvme"), what it
  // holds ("optimizer state") and a word for its name ("optimizer-state").
  struct Purpose {
    const char* setting;
    const char* contents;
    const char* stem;
  };
  // Creates and allocates `bytes` in directory `dir` (it must exist) for `rank`; throws naming the rank,
  // the setting and the fix.
  SwapFile(const std::string& dir, int rank, int64_t bytes, Purpose purpose);
  ~SwapFile();
  SwapFile(const SwapFile&) = delete;
  SwapFile& operator=(const SwapFile&) = delete;

  // Reads or writes `bytes` at `offset` (both aligned, like `buffer`), all of them; thread-safe (positional
  // I/O). On failure throws naming the rank, the setting, the operation, describe() (what the bytes are,
  // e.g. "unit 3's optimizer state (master, m, v)": built only then), the bytes, the offset and the file.
  template <typename Describe>
  void io(bool write, int64_t offset, void* buffer, int64_t bytes, Describe&& describe) const {
    if (const int err = try_io(write, offset, buffer, bytes); err != 0) fail(write, offset, bytes, describe(), err);
  }

  const std::string& path() const { return path_; }  // the name it was created under (unlinked)
  bool direct() const { return direct_; }            // O_DIRECT (false where the filesystem refused it)
  int64_t bytes() const { return bytes_; }
  // The bytes the filesystem holds for it now (its blocks, as stat counts them): the measured side of
  // MemoryPlan::disk.
  int64_t allocated() const;

 private:
  int try_io(bool write, int64_t offset, void* buffer, int64_t bytes) const noexcept;  // 0 or errno
  [[noreturn]] void fail(bool write, int64_t offset, int64_t bytes, const std::string& what, int err) const;

  std::string path_;
  int rank_;
  int64_t bytes_;
  Purpose purpose_;
  int fd_ = -1;
  bool direct_ = false;
};

}  // namespace zs::offload
