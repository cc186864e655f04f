// safetensors: the format's reader (mmap; slices are read without touching the rest of the file) and
// writer. Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data (offsets relative to it).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "runtime/file_io.h"

namespace zs {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header: every error names the file and what is wrong.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Throws naming the file and the missing tensor.
  const SafetensorsTensor& tensor(const std::string& name) const;
  // Elements [offset, offset + count) of a tensor (flat, row-major), converted to f32.
  void read_f32(const SafetensorsTensor& t, int64_t offset, int64_t count, float* out);
  // Bytes of tensor data read so far (each rank of a sharded load reads only its slices).
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  std::size_t size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t bytes_read_ = 0;
};

// Parses a header (the JSON after the 8-byte length) against a data section of `data_bytes`; pure, for
// the reader and its fuzzing. Throws zs::Error naming `source`.
std::vector<SafetensorsTensor> parse_safetensors_header(std::string_view json, uint64_t data_bytes,
                                                        const std::string& source,
                                                        std::map<std::string, std::string>* metadata = nullptr);

struct SafetensorsSource {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes
};

// Streams a file: the header from the declared tensors (name, dtype, shape; offsets are assigned in
// order), then each tensor's bytes in that order through write(). Never holds more than the caller passes.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<SafetensorsTensor> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  // The next bytes of tensor data (any split across calls).
  void write(const void* data, std::size_t bytes) { file_.write(data, bytes); }
  // Checks that exactly the declared bytes were written, fsyncs, closes; returns the file's size and checksum.
  FileDigest finish();
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }

 private:
  FileWriter file_;
  std::vector<SafetensorsTensor> tensors_;
  uint64_t expected_ = 0;
};

// Writes tensors in the given order (to `path`, replacing it).
void write_safetensors(const std::string& path, std::span<const SafetensorsSource> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace zs
