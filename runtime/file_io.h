// Durable files: a streaming writer that checksums what it writes (xxHash64) and fsyncs on finish,
// whole-file digests for verification, and write-to-temporary-then-rename for small files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace zs {

struct FileDigest {
  uint64_t bytes = 0;
  uint64_t xxh64 = 0;
  bool operator==(const FileDigest&) const = default;
};

// "0123456789abcdef": how checksums appear in manifests.
std::string hex64(uint64_t v);

class FileWriter {
 public:
  // Creates or truncates `path`. Errors name the path; a full disk or a file-size limit says so.
  explicit FileWriter(std::string path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  void write(const void* data, std::size_t bytes);
  // fsyncs and closes; returns the size and checksum of everything written.
  FileDigest finish();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  void* state_ = nullptr;  // XXH64_state_t
  uint64_t bytes_ = 0;
};

// Reads the whole file once.
FileDigest digest_file(const std::string& path);
// Writes `content` to path + ".tmp", fsyncs it, renames it over `path` and fsyncs the directory: readers
// see the old content or the new, never a mix.
void write_file_atomic(const std::string& path, const std::string& content);
// Makes a rename or creation inside `dir` durable.
void fsync_dir(const std::string& dir);

}  // namespace zs
