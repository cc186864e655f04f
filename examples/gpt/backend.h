// The GPT's math on one device, behind the trainer's loop (trainer.cpp), which gathers and reduces units
// through the engine and is written once: the CPU backend runs the float layers of model.h with BLAS
// (backend_cpu.cpp); the CUDA backend runs cuBLAS GEMMs and our kernels on the engine's compute stream
// (cuda/backend_cuda.cpp). A backend owns the activations a step keeps for its backward; with activation
// checkpointing (`recompute`) it keeps only each block's input and one block's internals, and
// block_backward runs the block's forward again first (one more forward per step; the same results, bit
// for bit, since the same kernels see the same inputs).
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "examples/gpt/model.h"

namespace gpt {

// A unit's tensors (gathered parameters or gradients) in unit order; embed: wte, wpe; ln_f: g, b.
using Ptrs = std::array<void*, kBlockTensors>;

class Backend {
 public:
  virtual ~Backend() = default;
  // The batch's tokens and targets (batch * seq each, host memory), before embed_forward and head.
  virtual void set_batch(const int* tokens, const int* targets) = 0;
  virtual void embed_forward(const Ptrs& embed) = 0;
  virtual void block_forward(int layer, const Ptrs& block) = 0;
  // Final norm, tied head and loss; with gradients (both non-null) also their backward, which leaves the
  // gradient of the last block's output for block_backward.
  virtual void head(const Ptrs& embed, const Ptrs& ln_f, const Ptrs* d_embed, const Ptrs* d_ln_f) = 0;
  virtual void block_backward(int layer, const Ptrs& block, const Ptrs& d_block) = 0;
  virtual void embed_backward(const Ptrs& d_embed) = 0;
  // The mean loss of the last head() (the host waits for it).
  virtual double loss() = 0;
  // Row `row` of the last forward-only head()'s logits.
  virtual std::vector<float> logits_row(int row) = 0;
};

// f32 parameters and gradients.
std::unique_ptr<Backend> make_cpu_backend(const Shape& s, int batch, bool recompute);
#ifdef ZS_GPT_CUDA
// On `engine`'s device and compute stream; activations in the parameters' dtype (f32 or bf16), gradients in
// the reduce dtype (f32, or bf16 with bf16 parameters).
std::unique_ptr<Backend> make_cuda_backend(const Shape& s, int batch, zs::Engine& engine, bool recompute);
#endif

}  // namespace gpt
