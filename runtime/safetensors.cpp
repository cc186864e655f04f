// safetensors reader (mmap, validated header) and writer.
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace zs {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

DType parse_dtype(const std::string& s, const std::string& source, const std::string& name) {
  if (s == "F32") return DType::f32;
  if (s == "BF16") return DType::bf16;
  if (s == "F16") return DType::f16;
  if (s == "F64") return DType::f64;
  ZS_FAIL("{}: tensor '{}' has dtype {}; ZeroShard reads F32, BF16, F16 and F64", source, name, s);
}

const char* dtype_tag(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::f64:
      return "F64";
  }
  return "?";
}

}  // namespace

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<SafetensorsTensor> parse_safetensors_header(std::string_view json, uint64_t data_bytes,
                                                        const std::string& source,
                                                        std::map<std::string, std::string>* metadata) {
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    ZS_FAIL("{}: the safetensors header is not valid JSON: {}", source, e.what());
  }
  ZS_CHECK(h.is_object(), "{}: the safetensors header must be a JSON object", source);
  std::vector<SafetensorsTensor> out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      ZS_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings", source);
      for (auto m = v.begin(); m != v.end(); ++m) {
        ZS_CHECK(m.value().is_string(), "{}: __metadata__['{}'] must be a string", source, m.key());
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    ZS_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets") &&
                 v["dtype"].is_string() && v["shape"].is_array() && v["data_offsets"].is_array() &&
                 v["data_offsets"].size() == 2,
             "{}: tensor '{}' needs dtype (string), shape (array) and data_offsets ([begin, end])", source, name);
    SafetensorsTensor t;
    t.name = name;
    t.dtype = parse_dtype(v["dtype"].get<std::string>(), source, name);
    for (const auto& d : v["shape"]) {
      ZS_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
               "{}: tensor '{}' has a shape entry that is not a non-negative integer", source, name);
      t.shape.push_back(d.get<int64_t>());
      ZS_CHECK(t.shape.back() <= (int64_t{1} << 48), "{}: tensor '{}' has an absurd dimension", source, name);
    }
    for (const auto& o : v["data_offsets"])
      ZS_CHECK(o.is_number_unsigned(), "{}: tensor '{}' has a data offset that is not a non-negative integer", source,
               name);
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    ZS_CHECK(t.begin <= t.end && t.end <= data_bytes,
             "{}: tensor '{}' has data_offsets [{}, {}] outside the {} bytes of data (truncated file?)", source, name,
             t.begin, t.end, data_bytes);
    const uint64_t want = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
    ZS_CHECK(t.end - t.begin == want, "{}: tensor '{}' spans {} bytes but its shape and dtype need {}", source, name,
             t.end - t.begin, want);
    out.push_back(std::move(t));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ZS_CHECK(fd_ >= 0, "cannot open '{}': {}", path, detail::sys_error_string(errno));
  struct stat st {};
  ZS_CHECK_SYS(::fstat(fd_, &st), "stat '{}'", path);
  size_ = static_cast<std::size_t>(st.st_size);
  ZS_CHECK(size_ >= 8, "{}: {} bytes is too short for a safetensors file (it starts with an 8-byte header length)",
           path, size_);
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  ZS_CHECK(m != MAP_FAILED, "cannot map '{}': {}", path, detail::sys_error_string(errno));
  map_ = static_cast<const uint8_t*>(m);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | map_[i];
  ZS_CHECK(n <= kMaxHeader && n <= size_ - 8,
           "{}: header length {} does not fit the file's {} bytes (truncated or "
           "not safetensors)",
           path, n, size_);
  data_ = map_ + 8 + n;
  tensors_ = parse_safetensors_header(std::string_view(reinterpret_cast<const char*>(map_ + 8), n), size_ - 8 - n, path,
                                      &metadata_);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

const SafetensorsTensor& SafetensorsFile::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  ZS_FAIL("{}: no tensor '{}' ({} tensors in the file)", path_, name, tensors_.size());
}

void SafetensorsFile::read_f32(const SafetensorsTensor& t, int64_t offset, int64_t count, float* out) {
  ZS_CHECK(offset >= 0 && count >= 0 && offset + count <= t.numel(),
           "{}: reading [{}, {}) of tensor '{}' ({} elements)", path_, offset, offset + count, t.name, t.numel());
  const std::size_t es = dtype_size(t.dtype);
  const uint8_t* p = data_ + t.begin + static_cast<uint64_t>(offset) * es;
  for (int64_t i = 0; i < count; ++i) out[i] = load_as_f32(p, t.dtype, static_cast<std::size_t>(i));
  bytes_read_ += static_cast<uint64_t>(count) * es;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafetensorsTensor> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : file_(path), tensors_(std::move(tensors)) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (auto& t : tensors_) {
    t.begin = off;
    t.end = off + static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
    off = t.end;
    h[t.name] = {{"dtype", dtype_tag(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string json = h.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(json.size()) >> (8 * i));
  file_.write(len, 8);
  file_.write(json.data(), json.size());
  expected_ = 8 + json.size() + off;
}

FileDigest SafetensorsWriter::finish() {
  const FileDigest d = file_.finish();
  ZS_CHECK(d.bytes == expected_, "{}: {} bytes were written but the header declares {}", file_.path(), d.bytes,
           expected_);
  return d;
}

void write_safetensors(const std::string& path, std::span<const SafetensorsSource> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensor> decl;
  for (const auto& t : tensors) decl.push_back({t.name, t.dtype, t.shape, 0, 0});
  SafetensorsWriter w(path, std::move(decl), metadata);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = w.tensors()[i];
    w.write(tensors[i].data, t.end - t.begin);
  }
  w.finish();
}

}  // namespace zs
