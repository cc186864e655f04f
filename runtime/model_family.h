// Model families whose shape zsmem and the examples share: their units (name, tensors) from a few numbers.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "sharding/flat_layout.h"

namespace zs::family {

using Units = std::vector<std::pair<std::string, std::vector<TensorSpec>>>;

// A GPT-2-style decoder (examples/gpt): unit "embed" (wte [V, d], wpe [T, d]; the LM head is tied to wte),
// blocks "h.0".. (ln1, attn.qkv, attn.proj, ln2, mlp.fc, mlp.proj), unit "ln_f".
// The example's attention: plain (the T x T probabilities, any device and dtype), fused (CUDA, bf16, no
// probabilities: examples/gpt/cuda/attention_fused.cu), or automatic: fused wherever it runs.
enum class Attention { automatic, plain, fused };

struct Gpt {
  int vocab = 256;
  int d = 128;
  int layers = 4;
  int heads = 4;
  int seq = 64;
  Attention attention = Attention::automatic;  // changes the activation bytes; the parameters are the same
};
std::vector<TensorSpec> gpt_block(int d);
std::vector<TensorSpec> gpt_embed(const Gpt& g);
std::vector<TensorSpec> gpt_ln_f(int d);
Units gpt_units(const Gpt& g);
// Why fused attention cannot run with `batch` sequences per rank of width d over `heads` heads on this
// device (cpu) in this compute dtype, naming the fix; empty when it can.
std::string gpt_fused_attention_unfit(int batch, int d, int heads, bool cpu, DType compute);
// Whether the example computes fused attention: as g.attention says, or where it runs when automatic.
bool gpt_fused_attention(const Gpt& g, int batch, bool cpu, DType compute);
// The example GPT's activation buffers per rank for `batch` sequences, in bytes: on the CPU its f32 vectors
// (examples/gpt/backend_cpu.cpp, model.h); on CUDA its device buffers (examples/gpt/cuda/backend_cuda.cpp,
// ledger category `activations`): the compute dtype, f32 statistics, and an f32 embedding-gradient table
// when gradients are not f32. `recompute` (activation checkpointing): one block's internals instead of every
// block's. Fused attention (CUDA; gpt_fused_attention) keeps each block's per-query log-sum-exp (B H T
// floats) instead of the probabilities.
int64_t gpt_activation_bytes(const Gpt& g, int batch, bool cpu, DType compute, DType reduce, bool recompute = false);
// And in host memory (ledger category `activations` on the host): on CUDA the pinned staging of a batch's
// tokens and targets and the loss read back; none on the CPU.
int64_t gpt_activation_host_bytes(const Gpt& g, int batch, bool cpu);
// Parses "d=2048,L=24,V=32000,T=1024,H=16,attn=fused" (any subset, over the defaults; attn: auto, plain or
// fused); throws naming a bad field.
Gpt parse_gpt(const std::string& spec);

}  // namespace zs::family
