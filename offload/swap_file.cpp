// SwapFile: creating, allocating and probing the file; positional I/O with errors that name it.
#include "offload/swap_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"

namespace zs::offload {

SwapRegion swap_region(int64_t master, int64_t m, int64_t v) {
  SwapRegion r;
  r.bytes = {master, m, v};
  for (std::size_t k = 0; k < 3; ++k) {
    r.offset[k] = r.size;
    r.size += swap_aligned(r.bytes[k]);
  }
  return r;
}

int64_t swap_file_bytes(std::span<const SwapRegion> regions) {
  int64_t total = 0;
  for (const SwapRegion& r : regions) total += r.size;
  return total;
}

std::vector<int64_t> swap_offsets(std::span<const SwapRegion> regions) {
  std::vector<int64_t> out{0};
  for (const SwapRegion& r : regions) out.push_back(out.back() + r.size);
  return out;
}

int64_t swap_buffer_bytes(std::span<const SwapRegion> regions, int count) {
  int64_t largest = 0;
  for (const SwapRegion& r : regions) largest = std::max(largest, r.size);
  return largest == 0 ? 0 : largest * count + kSwapAlignment;
}

char* swap_aligned(void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  return static_cast<char*>(p) + (swap_aligned(static_cast<int64_t>(addr)) - static_cast<int64_t>(addr));
}

std::string swap_unit(std::span<const std::string> names, int u) {
  if (u >= 0 && static_cast<std::size_t>(u) < names.size())
    return fmt::format("unit '{}'", names[static_cast<std::size_t>(u)]);
  return fmt::format("unit {}", u);
}

int64_t SwapFile::allocated() const {
  struct stat st {};
  return ::fstat(fd_, &st) == 0 ? static_cast<int64_t>(st.st_blocks) * 512 : 0;
}

int at_least_two(int count, const char* setting) {
  ZS_CHECK(count >= 2, "{} {} must be at least 2 (one buffer is in I/O while another is in use)", setting, count);
  return count;
}

SwapFile::SwapFile(const std::string& dir, int rank, int64_t bytes, Purpose purpose)
    : rank_(rank), bytes_(bytes), purpose_(purpose) {
  ZS_CHECK(!dir.empty(), "rank {}: {} needs offload.nvme_path: a directory on a fast local disk for the {}", rank,
           purpose.setting, purpose.contents);
  std::error_code ec;
  ZS_CHECK(std::filesystem::is_directory(dir, ec),
           "rank {}: offload.nvme_path '{}' is not a directory; create it (on a fast local disk) or point "
           "offload.nvme_path at one",
           rank, dir);
  std::string name = fmt::format("{}/zeroshard-{}.rank{}.XXXXXX", dir, purpose.stem, rank);
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  ZS_CHECK(fd_ >= 0, "rank {}: {} could not create its file in '{}': {}; check the permissions", rank, purpose.setting,
           dir, detail::sys_error_string(errno));
  path_ = name;
  ::unlink(name.c_str());  // the open descriptor keeps it; nothing outlives the process
  const int flags = ::fcntl(fd_, F_GETFL);
  direct_ = flags != -1 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0;
  if (const int rc = ::posix_fallocate(fd_, 0, std::max<int64_t>(bytes_, 1)); rc != 0) {
    struct statvfs fs {};
    const double free_gib = ::fstatvfs(fd_, &fs) == 0
                                ? static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize) / 1073741824.0
                                : -1.0;
    ::close(fd_);
    ZS_CHECK(rc != ENOSPC,
             "rank {}: {} needs {:.2f} GiB of disk in '{}' for this rank's {}, and {:.2f} GiB are free; free "
             "space, point offload.nvme_path at a larger disk, or use more ranks",
             rank, purpose.setting, static_cast<double>(bytes_) / 1073741824.0, dir, purpose.contents, free_gib);
    ZS_FAIL("rank {}: {} could not allocate {} bytes in '{}': {}", rank, purpose.setting, bytes_, dir,
            detail::sys_error_string(rc));
  }
  if (direct_ && bytes_ >= kSwapAlignment) {
    // Some filesystems accept the flag and refuse the I/O: then the page cache it is.
    std::unique_ptr<void, decltype(&std::free)> probe(std::aligned_alloc(kSwapAlignment, kSwapAlignment), &std::free);
    if (probe) std::memset(probe.get(), 0, kSwapAlignment);
    if (!probe || try_io(true, 0, probe.get(), kSwapAlignment) != 0) {
      direct_ = false;
      ::fcntl(fd_, F_SETFL, flags);
    }
  }
}

SwapFile::~SwapFile() {
  ::close(fd_);
}

int SwapFile::try_io(bool write, int64_t offset, void* buffer, int64_t bytes) const noexcept {
  char* p = static_cast<char*>(buffer);
  for (int64_t done = 0; done < bytes;) {
    const auto n = static_cast<std::size_t>(bytes - done);
    const ssize_t got = write ? ::pwrite(fd_, p + done, n, offset + done) : ::pread(fd_, p + done, n, offset + done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return got < 0 ? errno : EIO;  // a read of 0 bytes: the file is shorter than it was allocated
    done += got;
  }
  return 0;
}

void SwapFile::fail(bool write, int64_t offset, int64_t bytes, const std::string& what, int err) const {
  ZS_FAIL("rank {}: {}: {} of {} ({} bytes at offset {}) in '{}' failed: {}; check the disk (dmesg) and its free space",
          rank_, purpose_.setting, write ? "writing" : "reading", what, bytes, offset, path_,
          detail::sys_error_string(err));
}

}  // namespace zs::offload
