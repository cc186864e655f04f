// WeightFiles: a model's weights in safetensors, as one file or as Hugging Face's sharded layout (an index
// `*.safetensors.index.json` whose "weight_map" names the file of each tensor, the files beside it). Each
// file is mapped, not read: a rank reading its shards touches only those bytes. And the reverse's plan:
// which tensors go in which file when a save is split at a maximum file size.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/safetensors.h"

namespace zs {

// The index's name in a directory of sharded weights (Hugging Face's save_pretrained), and the files'.
inline constexpr std::string_view kWeightsIndex = "model.safetensors.index.json";
std::string weight_shard_name(int index, int count);  // model-00001-of-00003.safetensors (1-based)

class WeightFiles {
 public:
  // `path`: a .safetensors file, an index JSON, or a directory holding model.safetensors.index.json or else
  // exactly one .safetensors file. Every error names the file and what is wrong (a malformed index at its
  // line and column, a file it names that is missing, a tensor it maps to a file that lacks it).
  explicit WeightFiles(const std::string& path);
  ~WeightFiles();
  WeightFiles(const WeightFiles&) = delete;
  WeightFiles& operator=(const WeightFiles&) = delete;

  // What was opened: the file, or the index and how many files it names.
  const std::string& description() const { return description_; }
  // Every tensor of the set (name, dtype, shape), in the files' order.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  // Elements [offset, offset + count) of the named tensor (flat, row-major), converted to f32.
  void read_f32(const std::string& name, int64_t offset, int64_t count, float* out);
  uint64_t bytes_read() const;

 private:
  struct Entry {
    SafetensorsFile* file;
    const SafetensorsTensor* tensor;
  };
  void open_file(const std::string& path);
  void open_index(const std::string& index);
  std::string description_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, Entry, std::less<>> by_name_;
};

// Writes weights tensor by tensor, as one safetensors file at `path` (max_file_bytes <= 0) or, split at
// max_file_bytes (plan_weight_files), as Hugging Face's sharded layout in the directory `path`: its files
// model-0000k-of-0000N.safetensors, then model.safetensors.index.json once they are all written. Never holds
// more than the tensor the caller passes.
class WeightsWriter {
 public:
  WeightsWriter(std::string path, std::vector<SafetensorsTensor> tensors, std::map<std::string, std::string> metadata,
                int64_t max_file_bytes = 0);
  ~WeightsWriter();
  WeightsWriter(const WeightsWriter&) = delete;
  WeightsWriter& operator=(const WeightsWriter&) = delete;
  // The next declared tensor's bytes, whole.
  void write_tensor(const void* data, std::size_t bytes);
  // Closes the last file (each is fsynced) and writes the index (atomically); checks every tensor came.
  void finish();
  int files() const { return files_; }

 private:
  void open(int file);
  std::string path_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  bool sharded_;
  std::vector<int> file_of_;
  int files_ = 0;
  std::size_t next_ = 0;
  std::unique_ptr<SafetensorsWriter> writer_;
};

// An index's text: its weight_map's (tensor, file) pairs, each file a plain name beside the index. Throws
// zs::Error naming `source` (malformed JSON at its line and column, no weight_map, a value that is not a
// file name). Pure, for WeightFiles and its fuzzing.
std::vector<std::pair<std::string, std::string>> parse_weights_index(std::string_view text, const std::string& source);

// The unit a published model's tensor belongs to when its weights are all one has (zsmem estimate
// --weights): the name up to its first all-digit component, the block ("model.layers.12.mlp.up_proj.weight"
// -> "model.layers.12", as FSDP wraps a transformer block), else the module holding it ("model.norm.weight"
// -> "model.norm"), else the name. Pure.
std::string weight_unit(std::string_view tensor_name);

// Which file each tensor goes to when a save of tensors of these byte sizes is split at max_file_bytes:
// in order, a new file whenever the next tensor would not fit (a tensor larger than the limit alone in its
// own file), as Hugging Face's max_shard_size does. max_file_bytes <= 0: one file. Pure.
std::vector<int> plan_weight_files(std::span<const int64_t> tensor_bytes, int64_t max_file_bytes);

// The index JSON for those files: {"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}.
std::string weights_index_json(std::span<const std::string> names, std::span<const int> file_of, int64_t total_bytes);

}  // namespace zs
