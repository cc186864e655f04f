// Config: the typed training configuration, read from YAML and validated. Unknown keys, wrong types and
// out-of-range values are errors that name the key, its line:column and, for unknown keys, the closest
// valid one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.h"
#include "kernels/kernels.h"
#include "optim/schedule.h"

namespace zs {

struct Config {
  struct Zero {
    int stage = 3;
    int prefetch = 2;
    int max_live_units = 4;
    bool reshard_after_forward = true;
    int hybrid_group = 0;       // shard within groups of this many consecutive ranks, replicate across them
    int grad_accumulation = 1;  // micro-batches per step
    // Stages 2-3 with accumulation: true reduce-scatters every micro-batch's gradients and adds them up in
    // this rank's shard (DeepSpeed ZeRO-2/3, FSDP); false keeps every unit's full gradient until the last
    // micro-batch and reduces once (FSDP's no_sync: 1/grad_accumulation of the communication, the gradient
    // memory of stage 1).
    bool reduce_every_micro_batch = true;
    // Every unit's gradient is kept whole between reductions: stages 0-1, or accumulation without
    // reduce_every_micro_batch. Otherwise a rank keeps its shard of the reduced gradients.
    bool full_grads() const { return stage <= 1 || (grad_accumulation > 1 && !reduce_every_micro_batch); }
    // Each micro-batch's reduced shard is added to the shard of the ones before (stages 2-3, accumulation).
    bool sharded_accumulation() const { return !full_grads() && grad_accumulation > 1; }
    // The ranks a unit is sharded over out of `world`, and rank `rank`'s shard index among them.
    int shard_size(int world) const { return hybrid_group > 0 ? hybrid_group : world; }
    int shard_rank(int world, int rank) const { return rank % shard_size(world); }
    bool replicated(int world) const { return shard_size(world) < world; }  // hybrid: more than one group
  } zero;
  struct Precision {
    DType param = DType::f32;   // compute dtype of gathered parameters
    DType reduce = DType::f32;  // gradient buffers and reduce-scatter
    DType master = DType::f32;
    // Loss scaling for f16 (DeepSpeed's fp16 settings of the same names): none; dynamic (start at
    // 2^initial_scale_power; an overflow skips the step and halves the scale, never below min_loss_scale,
    // and an overflow at that minimum fails the run; after loss_scale_window clean steps the scale doubles,
    // after an overflow only once `hysteresis` windows were clean); or fixed (fixed_loss_scale, YAML's
    // `loss_scale: 128`: an overflow skips the step).
    std::string loss_scale = "none";  // none | dynamic | fixed
    double fixed_loss_scale = 0.0;
    int initial_scale_power = 16;
    int64_t loss_scale_window = 1000;
    int hysteresis = 2;
    double min_loss_scale = 1.0;
    bool scaled() const { return loss_scale != "none"; }
  } precision;
  struct Optimizer {
    kernels::Optimizer type = kernels::Optimizer::adamw;
    float lr = 3e-4f;
    float beta1 = 0.9f, beta2 = 0.95f;
    float eps = 1e-8f;
    float weight_decay = 0.0f;
    float clip_grad_norm = 0.0f;  // 0: off
    float momentum = 0.0f;        // SGD
    float dampening = 0.0f;       // SGD
    bool nesterov = false;        // SGD
    // Adam's m and v, Lion's m: f32, or bf16 to halve the optimizer state (updates computed in f32, the
    // states rounded to nearest even when stored; SGD keeps its momentum in f32).
    DType state_dtype = DType::f32;
  } optimizer;
  Schedule schedule;
  struct Offload {
    // Where the optimizer steps and keeps its state: none (the device), cpu (host memory), or nvme: the CPU
    // steps, with the f32 master, m and v in a file under nvme_path, streamed through buffer_count host
    // buffers of the largest unit's state (ZeRO-Infinity's optimizer on NVMe; offload/state_swap.h).
    std::string optimizer = "none";
    // Where stage 3 keeps the parameter shards the CPU step writes and the gathers start from: none (the
    // device), cpu (host memory) or nvme: a file under nvme_path, cached in param_buffer_count host slots
    // of the largest unit's shard (ZeRO-Infinity's parameters on NVMe; offload/swap_cache.h).
    std::string params = "none";
    // Where the offloaded units' reduced gradient shards wait for the CPU step: cpu (host memory) or nvme: a
    // file under nvme_path, written as each shard lands and read back for its update, through
    // grad_buffer_count host slots of the largest unit's shard (DeepSpeed swaps them with the state on
    // NVMe; offload/swap_cache.h). nvme needs optimizer: nvme and mode: streaming.
    std::string grads = "cpu";
    // With zero.grad_accumulation at stages 2-3 (each micro-batch reduced into the shard): where an
    // offloaded unit adds its micro-batches up. host: each reduced shard is copied to the host as it lands
    // and added into the unit's host gradient shard (DeepSpeed's ZeRO-Offload; no gradient shard on the
    // device, at the price of a device-to-host copy and a host add per micro-batch); device: added up in a
    // shard on the device and copied once, after the last (4 bytes per parameter over the shard group on
    // the device). auto: host, unless grads: nvme (the sum is then made on the device and goes to disk once).
    std::string accumulate = "auto";  // auto | host | device
    bool pin_memory = true;
    std::string mode = "streaming";  // streaming | delayed
    std::string nvme_path;           // offload.*: nvme: an existing directory on a fast local disk
    int buffer_count = 4;            // offload.optimizer: nvme: host buffers for the state in flight, >= 2
    int param_buffer_count = 5;      // offload.params: nvme: host slots for parameter shards, >= 2
    int grad_buffer_count = 4;       // offload.grads: nvme: host slots for gradient shards, >= 2
    // The share of the trainable parameters whose optimizer runs on the host (DeepSpeed's
    // offload_optimizer.ratio, ZeRO-Offload++): the last units in registration order, at least this share
    // of the elements; the others keep master, m and v on the device and update there, while the host
    // works (offloaded_units() picks them). 1: every unit. In (0, 1]; below 1 with mode: streaming and
    // params: none only.
    double ratio = 1.0;
    static constexpr bool ratio_valid(double r) { return r > 0.0 && r <= 1.0; }
    bool optimizer_on_cpu() const { return optimizer != "none"; }  // the CPU steps (cpu or nvme)
    bool state_on_nvme() const { return optimizer == "nvme"; }
    bool params_offloaded() const { return params != "none"; }  // off the device: host memory or disk
    bool params_on_nvme() const { return params == "nvme"; }
    bool grads_on_nvme() const { return grads == "nvme"; }
    bool delayed() const { return mode == "delayed"; }
    bool accumulate_on_host() const { return accumulate == "host" || (accumulate == "auto" && !grads_on_nvme()); }
    // The tools' one-word form: none, optimizer, optimizer+params, delayed (the optimizer, delayed mode),
    // nvme and nvme+params (the optimizer's state on NVMe), optimizer+nvme-params and nvme+nvme-params
    // (the parameters on NVMe too: ZeRO-Infinity), and nvme+nvme-grads, nvme+nvme-grads+params and
    // nvme+nvme-grads+nvme-params (the gradient shards on NVMe too). choose() sets the optimizer, params,
    // grads and mode fields from it, and ratio to 1 for any word but optimizer (throws on another word);
    // choice() names the current setting.
    static constexpr std::string_view kChoices[] = {"none",
                                                    "optimizer",
                                                    "optimizer+params",
                                                    "delayed",
                                                    "nvme",
                                                    "nvme+params",
                                                    "optimizer+nvme-params",
                                                    "nvme+nvme-params",
                                                    "nvme+nvme-grads",
                                                    "nvme+nvme-grads+params",
                                                    "nvme+nvme-grads+nvme-params"};
    void choose(std::string_view choice);
    std::string_view choice() const;
  } offload;
  // The offloaded units add their micro-batches up in host memory (offload.accumulate, with accumulation
  // into the shard).
  bool host_accumulation() const {
    return offload.optimizer_on_cpu() && zero.sharded_accumulation() && offload.accumulate_on_host();
  }
  struct Comm {
    std::string backend = "auto";  // auto | gloo | nccl
    double timeout_s = 300;
  } comm;
  std::string device = "auto";  // auto | cpu | cuda
  struct Debug {
    // Before every collective the ranks compare a fingerprint (sequence, op, unit, bytes); a mismatch names
    // both sides instead of hanging or mixing data. Always on for the first step. Also ZS_CHECK_COLLECTIVES=1.
    bool check_collectives = false;
  } debug;
  struct Checkpoint {
    std::string dir = "ckpt";
    int64_t every_steps = 0;
    int keep = 3;
    // save_checkpoint copies this rank's part to host memory (checkpoint_staging, allocated with the engine)
    // and returns; a thread writes and commits it while training goes on (runtime/async_checkpoint.h).
    bool async = false;
  } checkpoint;

  // Throws zs::Error "<source>:<line>:<col>: ..." on the first problem.
  static Config from_yaml(const std::string& text, const std::string& source = "<config>");
  static Config from_yaml_file(const std::string& path);
  // The file `zsrun --config` named for this job (ZS_CONFIG; zsrun checked it before starting any rank): its
  // path ("" when there is none), and its config or `otherwise`.
  static std::string job_path();
  static Config from_job(const Config& otherwise);
};

// Why this offload choice cannot run with this stage (empty when it can); the YAML reader and the engine
// both refuse such a config with this message.
std::string offload_problem(const Config& c);
// Why zero.max_live_units cannot hold the unit in use and the prefetched ones (empty when it can); the YAML
// reader and zsmem refuse such a config with this message.
std::string live_units_problem(const Config& c);

}  // namespace zs
