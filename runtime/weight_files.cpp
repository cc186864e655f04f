// Weights in one safetensors file or in Hugging Face's sharded layout.
#include "runtime/weight_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "runtime/file_io.h"

namespace zs {
namespace fs = std::filesystem;

std::string weight_shard_name(int index, int count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index, count);
}

WeightFiles::WeightFiles(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  ZS_CHECK(fs::exists(p, ec), "weights '{}': no such file or directory", path);
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / kWeightsIndex, ec)) {
      open_index((p / kWeightsIndex).string());
      return;
    }
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.path().extension() == ".safetensors") found.push_back(e.path());
    ZS_CHECK(found.size() == 1,
             "weights '{}': the directory holds no {} and {} .safetensors files; give the index, one file, or a "
             "directory with one of them",
             path, kWeightsIndex, found.size());
    open_file(found.front().string());
    return;
  }
  if (path.ends_with(".json"))
    open_index(path);
  else
    open_file(path);
}

void WeightFiles::open_file(const std::string& path) {
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  description_ = path;
  for (const SafetensorsTensor& t : files_.back()->tensors()) {
    tensors_.push_back(t);
    by_name_.emplace(t.name, Entry{files_.back().get(), &t});
  }
}

WeightFiles::~WeightFiles() = default;

std::vector<std::pair<std::string, std::string>> parse_weights_index(std::string_view text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    ZS_FAIL("weights index '{}' is not valid JSON: {}", source, e.what());
  }
  ZS_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
           "weights index '{}': expected a JSON object with a \"weight_map\" object (tensor name -> file name), as "
           "Hugging Face's model.safetensors.index.json",
           source);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, file] : j["weight_map"].items()) {
    ZS_CHECK(file.is_string(), "weights index '{}': tensor '{}' maps to {}, not a file name", source, name,
             file.dump());
    const std::string f = file.get<std::string>();
    ZS_CHECK(
        !f.empty() && f != "." && f != ".." && f.find('/') == std::string::npos && f.find('\0') == std::string::npos,
        "weights index '{}': tensor '{}' maps to '{}', not a file name beside the index", source, name, f);
    out.emplace_back(name, f);
  }
  return out;
}

void WeightFiles::open_index(const std::string& index) {
  std::ifstream in(index);
  ZS_CHECK(in.good(), "weights index '{}': cannot read it", index);
  std::stringstream ss;
  ss << in.rdbuf();
  const fs::path dir = fs::path(index).parent_path();
  std::map<std::string, SafetensorsFile*> open;  // by file name, each opened once
  for (const auto& [name, f] : parse_weights_index(ss.str(), index)) {
    auto it = open.find(f);
    if (it == open.end()) {
      const fs::path fp = dir / f;
      std::error_code ec;
      ZS_CHECK(fs::exists(fp, ec), "weights index '{}' maps tensor '{}' to '{}', which does not exist", index, name,
               fp.string());
      files_.push_back(std::make_unique<SafetensorsFile>(fp.string()));
      it = open.emplace(f, files_.back().get()).first;
    }
    SafetensorsFile& sf = *it->second;
    const SafetensorsTensor* t = nullptr;
    for (const SafetensorsTensor& c : sf.tensors())
      if (c.name == name) t = &c;
    ZS_CHECK(t != nullptr, "weights index '{}' maps tensor '{}' to '{}', which does not hold it", index, name,
             sf.path());
    by_name_.emplace(name, Entry{&sf, t});
  }
  // The files' order, each file's tensors in its own order: what a listing of the set shows.
  for (const auto& f : files_)
    for (const SafetensorsTensor& t : f->tensors())
      if (auto e = by_name_.find(t.name); e != by_name_.end() && e->second.tensor == &t) tensors_.push_back(t);
  description_ = fmt::format("{} and its {} files", index, files_.size());
}

void WeightFiles::read_f32(const std::string& name, int64_t offset, int64_t count, float* out) {
  const auto it = by_name_.find(name);
  ZS_CHECK(it != by_name_.end(), "weights {}: no tensor '{}'", description_, name);
  it->second.file->read_f32(*it->second.tensor, offset, count, out);
}

uint64_t WeightFiles::bytes_read() const {
  uint64_t n = 0;
  for (const auto& f : files_) n += f->bytes_read();
  return n;
}

WeightsWriter::WeightsWriter(std::string path, std::vector<SafetensorsTensor> tensors,
                             std::map<std::string, std::string> metadata, int64_t max_file_bytes)
    : path_(std::move(path)),
      tensors_(std::move(tensors)),
      metadata_(std::move(metadata)),
      sharded_(max_file_bytes > 0) {
  std::vector<int64_t> bytes;
  for (const auto& t : tensors_) bytes.push_back(t.numel() * static_cast<int64_t>(dtype_size(t.dtype)));
  file_of_ = plan_weight_files(bytes, max_file_bytes);
  files_ = file_of_.empty() ? 1 : file_of_.back() + 1;
  if (sharded_) {
    std::error_code ec;
    fs::create_directories(path_, ec);
    ZS_CHECK(!ec, "weights '{}': cannot create the directory: {}", path_, ec.message());
  }
  open(0);
}

WeightsWriter::~WeightsWriter() = default;

void WeightsWriter::open(int file) {
  std::vector<SafetensorsTensor> mine;
  for (std::size_t k = 0; k < tensors_.size(); ++k)
    if (file_of_[k] == file) mine.push_back(tensors_[k]);
  const std::string p = sharded_ ? (fs::path(path_) / weight_shard_name(file + 1, files_)).string() : path_;
  writer_ = std::make_unique<SafetensorsWriter>(p, std::move(mine), metadata_);
}

void WeightsWriter::write_tensor(const void* data, std::size_t bytes) {
  ZS_CHECK(next_ < tensors_.size(), "weights '{}': more tensors written than the {} declared", path_, tensors_.size());
  const SafetensorsTensor& t = tensors_[next_];
  ZS_CHECK(bytes == static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype),
           "weights '{}': tensor '{}' written with {} bytes, declared {}", path_, t.name, bytes,
           t.numel() * static_cast<int64_t>(dtype_size(t.dtype)));
  if (next_ > 0 && file_of_[next_] != file_of_[next_ - 1]) {  // this tensor starts the next file
    writer_->finish();
    open(file_of_[next_]);
  }
  writer_->write(data, bytes);
  ++next_;
}

void WeightsWriter::finish() {
  ZS_CHECK(next_ == tensors_.size(), "weights '{}': {} of {} tensors written", path_, next_, tensors_.size());
  writer_->finish();
  if (!sharded_) return;
  std::vector<std::string> names;
  int64_t total = 0;
  for (const auto& t : tensors_) {
    names.push_back(t.name);
    total += t.numel() * static_cast<int64_t>(dtype_size(t.dtype));
  }
  write_file_atomic((fs::path(path_) / kWeightsIndex).string(), weights_index_json(names, file_of_, total));
}

std::string weight_unit(std::string_view name) {
  std::size_t begin = 0;
  while (begin <= name.size()) {
    const std::size_t end = std::min(name.find('.', begin), name.size());
    const std::string_view part = name.substr(begin, end - begin);
    if (!part.empty() && part.find_first_not_of("0123456789") == std::string_view::npos)
      return std::string(name.substr(0, end));
    begin = end + 1;
  }
  const std::size_t last = name.rfind('.');
  return std::string(last == std::string_view::npos ? name : name.substr(0, last));
}

std::vector<int> plan_weight_files(std::span<const int64_t> tensor_bytes, int64_t max_file_bytes) {
  std::vector<int> file_of;
  int file = 0;
  int64_t in_file = 0;
  for (int64_t b : tensor_bytes) {
    if (max_file_bytes > 0 && in_file > 0 && in_file + b > max_file_bytes) {
      ++file;
      in_file = 0;
    }
    file_of.push_back(file);
    in_file += b;
  }
  return file_of;
}

std::string weights_index_json(std::span<const std::string> names, std::span<const int> file_of, int64_t total_bytes) {
  ZS_CHECK(names.size() == file_of.size(), "weights index: {} names for {} files", names.size(), file_of.size());
  const int count = file_of.empty() ? 0 : file_of.back() + 1;
  nlohmann::ordered_json map = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < names.size(); ++i) map[names[i]] = weight_shard_name(file_of[i] + 1, count);
  nlohmann::ordered_json j = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", map}};
  return j.dump(2) + "\n";
}

}  // namespace zs
