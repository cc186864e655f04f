// The GPT trained through a zs::Engine: declares the units, and runs forward (and backward) for a batch,
// gathering each unit just in time and handing its gradients to the engine as soon as they are complete.
// The math runs on the engine's device (backend.h): the CPU in f32, or CUDA in f32 or bf16.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "examples/gpt/backend.h"
#include "runtime/engine.h"

namespace gpt {

class Trainer {
 public:
  // Declares the model's units on `engine` (before init_params or load_checkpoint). With
  // checkpoint_activations each block keeps only its input and runs its forward again in the backward.
  Trainer(zs::Engine& engine, const Shape& shape, int batch, bool checkpoint_activations = false);
  // Forward and backward of one micro-batch (tokens and targets: batch * seq); returns its mean loss. The
  // gradients are reduced; the caller runs engine.step().
  double train(const int* tokens, const int* targets) { return run(tokens, targets, true); }
  // Forward only.
  double loss(const int* tokens, const int* targets) { return run(tokens, targets, false); }
  // `count` bytes continuing `prompt`, sampled at temperature 0.8 (collective; every rank gets the same text).
  std::string generate(const std::string& prompt, int count, uint64_t seed);
  // The shape, its attention resolved (plain or fused).
  const Shape& shape() const { return s_; }

 private:
  double run(const int* tokens, const int* targets, bool backward);
  zs::Engine& e_;
  Shape s_;
  int batch_;
  zs::UnitId embed_ = -1, ln_f_ = -1;
  std::vector<zs::UnitId> blocks_;
  std::unique_ptr<Backend> math_;
};

}  // namespace gpt
