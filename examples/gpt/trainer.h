// The GPT trained through a zs::Engine: declares the units, and runs forward (and backward) for a batch,
// gathering each unit just in time and handing its gradients to the engine as soon as they are complete.
// CPU, f32 compute and f32 gradients.
#pragma once

#include <vector>

#include "examples/gpt/model.h"
#include "runtime/engine.h"

namespace gpt {

class Trainer {
 public:
  // Declares the model's units on `engine` (before init_params or load_checkpoint).
  Trainer(zs::Engine& engine, const Shape& shape, int batch);
  // Forward and backward of one micro-batch (tokens and targets: batch * seq); returns its mean loss. The
  // gradients are reduced; the caller runs engine.step().
  double train(const int* tokens, const int* targets) { return run(tokens, targets, true); }
  // Forward only.
  double loss(const int* tokens, const int* targets) { return run(tokens, targets, false); }
  // `count` bytes continuing `prompt`, sampled at temperature 0.8 (collective; every rank gets the same text).
  std::string generate(const std::string& prompt, int count, uint64_t seed);

 private:
  double run(const int* tokens, const int* targets, bool backward);
  zs::Engine& e_;
  Shape s_;
  int batch_;
  zs::UnitId embed_ = -1, ln_f_ = -1;
  std::vector<zs::UnitId> blocks_;
  std::vector<std::vector<float>> acts_;  // the residual stream entering each block, and leaving the last
  std::vector<BlockCache<float>> caches_;
  BlockScratch<float> scratch_;
  std::vector<float> xf_, mean_, rstd_, logits_, dx_, dx2_;
};

}  // namespace gpt
