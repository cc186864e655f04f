// Durable files: checksummed streaming writes, digests, atomic replacement.
#include "runtime/file_io.h"

#include <fcntl.h>
#include <unistd.h>
#define XXH_INLINE_ALL  // header-only use of Debian's libxxhash-dev: nothing to link or export
#include <xxhash.h>

#include <cerrno>
#include <filesystem>
#include <vector>

#include "core/error.h"

namespace zs {
namespace {

[[noreturn]] void write_failed(const std::string& path, int err) {
  const bool full = err == ENOSPC || err == EFBIG || err == EDQUOT;
  ZS_FAIL("writing '{}' failed: {}{}", path, detail::sys_error_string(err),
          full ? " (the disk is full or a file-size limit was hit; free space or save elsewhere)" : "");
}

}  // namespace

std::string hex64(uint64_t v) {
  return fmt::format("{:016x}", v);
}

FileWriter::FileWriter(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ZS_CHECK(fd_ >= 0, "cannot create '{}': {}", path_, detail::sys_error_string(errno));
  auto* s = XXH64_createState();
  ZS_CHECK(s != nullptr, "out of host memory creating a checksum state for '{}'", path_);
  XXH64_reset(s, 0);
  state_ = s;
}

FileWriter::~FileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (state_) XXH64_freeState(static_cast<XXH64_state_t*>(state_));
}

void FileWriter::write(const void* data, std::size_t bytes) {
  ZS_CHECK(fd_ >= 0, "'{}' was already finished", path_);
  XXH64_update(static_cast<XXH64_state_t*>(state_), data, bytes);
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) write_failed(path_, errno);
    if (n == 0) write_failed(path_, ENOSPC);
    p += n;
    bytes -= static_cast<std::size_t>(n);
    bytes_ += static_cast<uint64_t>(n);
  }
}

FileDigest FileWriter::finish() {
  ZS_CHECK(fd_ >= 0, "'{}' was already finished", path_);
  if (::fsync(fd_) != 0) write_failed(path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) write_failed(path_, errno);
  return {bytes_, XXH64_digest(static_cast<XXH64_state_t*>(state_))};
}

FileDigest digest_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ZS_CHECK(fd >= 0, "cannot open '{}': {}", path, detail::sys_error_string(errno));
  XXH64_state_t* s = XXH64_createState();
  XXH64_reset(s, 0);
  std::vector<char> buf(1 << 20);
  FileDigest d;
  int err = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    XXH64_update(s, buf.data(), static_cast<std::size_t>(n));
    d.bytes += static_cast<uint64_t>(n);
  }
  d.xxh64 = XXH64_digest(s);
  XXH64_freeState(s);
  ::close(fd);
  ZS_CHECK(err == 0, "reading '{}' failed: {}", path, detail::sys_error_string(err));
  return d;
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ZS_CHECK(fd >= 0, "cannot open directory '{}': {}", dir, detail::sys_error_string(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  ZS_CHECK(rc == 0, "fsync of directory '{}' failed: {}", dir, detail::sys_error_string(err));
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  FileWriter w(tmp);
  w.write(content.data(), content.size());
  w.finish();
  ZS_CHECK_SYS(::rename(tmp.c_str(), path.c_str()), "renaming '{}' to '{}'", tmp, path);
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  fsync_dir(parent.empty() ? "." : parent.string());
}

}  // namespace zs
