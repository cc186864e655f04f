// Corpus loading and batch sampling.
#include "examples/gpt/data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "core/error.h"
#include "sharding/init.h"

namespace gpt {
namespace fs = std::filesystem;

Corpus load_corpus(const std::vector<std::string>& paths, double val_fraction) {
  static const std::set<std::string> kText = {".md",  ".txt",  ".h",  ".cpp", ".cu",
                                              ".cuh", ".yaml", ".sh", ".py",  ".cmake"};
  std::vector<fs::path> files;
  for (const auto& p : paths) {
    std::error_code ec;
    ZS_CHECK(fs::exists(p, ec), "data: '{}' does not exist", p);
    if (fs::is_regular_file(p, ec)) {
      files.emplace_back(p);
      continue;
    }
    for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); ++it) {
      const std::string name = it->path().filename().string();
      if (it->is_directory() && (name.starts_with(".") || name.starts_with("build"))) {
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file() && kText.count(it->path().extension().string())) files.push_back(it->path());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<uint8_t> all;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    all.insert(all.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ZS_CHECK(all.size() >= 4096, "data: only {} bytes of text under {}; give --data files or directories with more",
           all.size(), paths.empty() ? std::string("(no paths)") : paths.front());
  Corpus c;
  c.files = static_cast<int>(files.size());
  const auto split = static_cast<std::ptrdiff_t>(static_cast<double>(all.size()) * (1.0 - val_fraction));
  c.train.assign(all.begin(), all.begin() + split);
  c.val.assign(all.begin() + split, all.end());
  return c;
}

void sample_batch(const std::vector<uint8_t>& data, uint64_t seed, int64_t step, int rank, int B, int T, int* tokens,
                  int* targets) {
  const uint64_t span = data.size() - static_cast<uint64_t>(T) - 1;
  for (int b = 0; b < B; ++b) {
    const uint64_t key = (static_cast<uint64_t>(rank) << 32) | static_cast<uint64_t>(b);
    const uint64_t at = zs::init::counter_hash(seed, key, static_cast<uint64_t>(step)) % span;
    for (int t = 0; t < T; ++t) {
      tokens[b * T + t] = data[at + static_cast<uint64_t>(t)];
      targets[b * T + t] = data[at + static_cast<uint64_t>(t) + 1];
    }
  }
}

}  // namespace gpt
