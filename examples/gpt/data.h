// Byte-level text data: every file under the given paths (text sources and docs, in sorted order) joined
// into one byte stream, its last part held out for validation; batches are windows at positions drawn from
// a counter-based hash of (seed, step, rank, row), so any step's batch is known without replaying the data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gpt {

struct Corpus {
  std::vector<uint8_t> train, val;
  int files = 0;
};

// Paths may be files or directories (searched for .md .txt .h .cpp .cu .cuh .yaml .sh .py .cmake). Throws
// naming the path when nothing usable is found.
Corpus load_corpus(const std::vector<std::string>& paths, double val_fraction);

// B windows of T + 1 bytes: tokens [B*T] and the next-byte targets [B*T].
void sample_batch(const std::vector<uint8_t>& data, uint64_t seed, int64_t step, int rank, int B, int T, int* tokens,
                  int* targets);

}  // namespace gpt
