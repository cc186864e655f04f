// Checkpoints on disk (DESIGN §8): a directory per saved step with one safetensors file per rank and a
// manifest.json that says what every file holds. The files store tensor pieces (element ranges of each
// tensor), not layout shards, so a checkpoint written by N ranks loads on M ranks by reading the pieces
// that overlap each new shard. `latest` in the checkpoint root names the newest complete step directory.
//
//   ckpt/latest                        "step-00000100"
//   ckpt/step-00000100/manifest.json   tensors, pieces, files with sizes and xxHash64, step, optimizer ...
//   ckpt/step-00000100/rank-00000.safetensors   "h.0.w/param" (f32 master), "h.0.w/exp_avg", ...
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "runtime/file_io.h"
#include "sharding/flat_layout.h"

namespace zs {
class SafetensorsFile;
}

namespace zs::ckpt {

inline constexpr std::string_view kFormat = "zeroshard-checkpoint";
inline constexpr int kFormatVersion = 1;
inline constexpr std::string_view kParam = "param";  // the stored parameter: f32 master, or a frozen tensor

struct Piece {
  int file = 0;       // index into Manifest::files
  int64_t first = 0;  // elements [first, first + count) of the tensor, row-major
  int64_t count = 0;
};

struct TensorEntry {
  std::string name;  // "unit.tensor"
  std::string unit;
  std::vector<int64_t> shape;
  bool trainable = true;
  bool weight_decay = true;
  DType dtype = DType::f32;   // of the stored parameter: f32 (master) when trainable, else the compute dtype
  std::vector<Piece> pieces;  // sorted, disjoint, covering [0, numel)
  int64_t numel() const;
};

struct FileEntry {
  std::string name;  // relative to the step directory
  FileDigest digest;
};

struct Manifest {
  int version = kFormatVersion;
  int64_t step = 0;
  int world_size = 1;
  int stage = 0;
  DType param_dtype = DType::f32;
  std::string optimizer;                // adamw | adam | sgd | lion
  std::vector<std::string> states;      // per trainable tensor, besides "param": e.g. exp_avg, exp_avg_sq
  std::map<std::string, double> hyper;  // lr, betas, eps, weight_decay ... as configured when saved
  Schedule schedule;
  LossScaler scaler;
  std::string user_state;  // the application's own (data position, RNG), opaque to the engine
  std::vector<TensorEntry> tensors;
  std::vector<FileEntry> files;

  const TensorEntry* find(std::string_view tensor) const;
};

// Pretty JSON.
std::string to_json(const Manifest& m);
// Parses and validates (types, ranges, piece coverage, file indices). Pure; every error names `source`.
Manifest parse_manifest(std::string_view text, const std::string& source);

std::string step_dir_name(int64_t step);                                  // "step-00000100"
std::string rank_file_name(int rank);                                     // "rank-00003.safetensors"
std::string entry_name(std::string_view tensor, std::string_view state);  // "h.0.w/exp_avg"
// The optimizer's per-element states, in the engine's order (m, then v), named as PyTorch names them.
std::vector<std::string> state_names(std::string_view optimizer);

// Elements [lo, hi) of a flat layout that writer `rank` of `writers` saves: its shard when the layout is
// sharded `writers` ways, otherwise an even split of the padded extent (stage 0: every rank holds all).
std::pair<int64_t, int64_t> owned_range(const FlatLayout& l, int rank, int writers);
// Appends to `out` the pieces of the tensor in slot [offset, offset + numel) of a layout saved by `writers`.
void add_pieces(const FlatLayout& l, const FlatLayout::Slot& slot, int writers, std::vector<Piece>& out);
// The elements of l's tensors (not its padding) that file `file` of `writers` holds: its pieces' total.
int64_t file_elements(const FlatLayout& l, int file, int writers);

// `dir` is a step directory (holds manifest.json) or a checkpoint root (holds `latest`): the step
// directory. Throws naming what is missing.
std::string resolve(const std::string& dir);
// The newest complete checkpoint under `root`, or "" when there is none yet.
std::string find_latest(const std::string& root);

// Rank 0, once every rank file is complete in `tmp`: writes the manifest, renames `tmp` to its final
// name, points `latest` at it (each step fsynced), then keeps only the newest `keep` step directories.
void commit(const std::string& root, const std::string& tmp, const Manifest& m, int keep);

// Reads a checkpoint: each file is checked against the manifest (size, then xxHash64) before it is used.
class Reader {
 public:
  explicit Reader(const std::string& dir);
  ~Reader();
  const Manifest& manifest() const { return manifest_; }
  const std::string& dir() const { return dir_; }
  // Size then checksum of file #i, once; throws naming the file and what is wrong.
  void verify(int file);
  // File #i, verified on first use.
  SafetensorsFile& open(int file);
  // The files holding elements [first, first + count) of a tensor.
  std::vector<int> files_for(const TensorEntry& t, int64_t first, int64_t count) const;
  // Elements [first, first + count) of a tensor's "param" or one of its states, as f32.
  void read(const TensorEntry& t, std::string_view state, int64_t first, int64_t count, float* out);

 private:
  std::string dir_;
  Manifest manifest_;
  std::map<int, std::unique_ptr<SafetensorsFile>> open_;
};

// Checks every file (size, xxHash64) and that each holds the entries the manifest promises; returns the
// bytes verified. Throws at the first problem, naming the file.
uint64_t verify_all(Reader& r);
// Writes every tensor's parameter to one safetensors file in `dtype` (f32 or bf16), streaming: one tensor
// is in memory at a time; with max_file_bytes > 0, `out` is a directory that gets Hugging Face's sharded
// layout (runtime/weight_files.h).
void export_safetensors(Reader& r, const std::string& out, DType dtype, int64_t max_file_bytes = 0);

// What differs between the tensors saved in `source` (a checkpoint, a file) and those of a model ("" when
// nothing): missing, unexpected, and reshaped or re-frozen tensors, one per line. With extras_differ false,
// saved tensors the model lacks are no difference, but are listed beside one (a missing tensor is often
// one of them under another name).
std::string diff_tensors(const std::vector<TensorEntry>& saved, const std::vector<TensorEntry>& model,
                         std::string_view source = "checkpoint", bool extras_differ = true);

}  // namespace zs::ckpt
