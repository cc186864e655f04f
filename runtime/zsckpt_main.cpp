// zsckpt: look into, verify and export ZeroShard checkpoints (CLI11).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "runtime/checkpoint.h"
#include "runtime/cli.h"

namespace {

void inspect(zs::ckpt::Reader& r) {
  const auto& m = r.manifest();
  int64_t params = 0, frozen = 0;
  for (const auto& t : m.tensors) (t.trainable ? params : frozen) += t.numel();
  fmt::print("checkpoint {}\n", r.dir());
  fmt::print("  step {}, saved by {} rank{} at ZeRO stage {}, compute dtype {}\n", m.step, m.world_size,
             m.world_size > 1 ? "s" : "", m.stage, zs::dtype_name(m.param_dtype));
  fmt::print("  optimizer {} (states: {}), lr {:.6g}\n", m.optimizer,
             m.states.empty() ? "none" : fmt::format("{}", fmt::join(m.states, ", ")),
             m.hyper.count("lr") ? m.hyper.at("lr") : 0.0);
  fmt::print("  {} tensors: {} trainable parameters, {} frozen\n", m.tensors.size(), params, frozen);
  if (m.param_dtype == zs::DType::f16) fmt::print("  loss scale {}\n", m.scaler.scale);
  if (!m.user_state.empty()) fmt::print("  user state: {}\n", m.user_state);
  fmt::print("\n  {:<28} {:>14}  {}\n", "file", "bytes", "xxh64");
  for (const auto& f : m.files) fmt::print("  {:<28} {:>14}  {}\n", f.name, f.digest.bytes, zs::hex64(f.digest.xxh64));
  fmt::print("\n  {:<40} {:<20} {:<6} {:<9} {}\n", "tensor", "shape", "dtype", "trainable", "pieces");
  for (const auto& t : m.tensors)
    fmt::print("  {:<40} {:<20} {:<6} {:<9} {}\n", t.name, fmt::format("[{}]", fmt::join(t.shape, ", ")),
               zs::dtype_name(t.dtype), t.trainable ? "yes" : "no", t.pieces.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "zsckpt: inspect, verify and export ZeroShard checkpoints.\n"
      "DIR is a checkpoint root (its `latest` is used) or one step directory.",
      "zsckpt"};
  app.require_subcommand(1);
  std::string dir, out, dtype = "f32";
  auto* ins = app.add_subcommand("inspect", "step, world size, optimizer, files and tensors");
  ins->add_option("DIR", dir, "checkpoint")->required();
  auto* ver = app.add_subcommand("verify", "check every file's size and xxHash64 and every entry");
  ver->add_option("DIR", dir, "checkpoint")->required();
  auto* exp = app.add_subcommand(
      "export", "write the parameters to one safetensors file (or Hugging Face's sharded layout), tensor by tensor");
  exp->add_option("DIR", dir, "checkpoint")->required();
  exp->add_option("--out", out, "the safetensors file to write (with --max-file-size: the directory)")
      ->required()
      ->check(zs::output_file());
  std::string max_file_size = "0";
  exp->add_option("--max-file-size", max_file_size,
                  "split into files of at most this much tensor data (5GB, 2GiB; a bare number is bytes), written "
                  "as model-0000k-of-0000N.safetensors with model.safetensors.index.json in --out, as Hugging "
                  "Face's save_pretrained(max_shard_size) does; 0: one file")
      ->check(zs::byte_size(1.0, "bytes"));
  exp->add_option("--dtype", dtype, "f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}))->capture_default_str();
  if (const auto stop = zs::parse_command_line(app, argc, argv)) return *stop;
  try {
    zs::ckpt::Reader r(dir);
    if (*ins) inspect(r);
    if (*ver) {
      const uint64_t bytes = zs::ckpt::verify_all(r);
      fmt::print("OK: {} (step {}): {} files, {} bytes, every checksum and entry matches the manifest\n", r.dir(),
                 r.manifest().step, r.manifest().files.size(), bytes);
    }
    if (*exp) {
      const auto max_bytes = static_cast<int64_t>(*zs::parse_byte_size(max_file_size));
      zs::ckpt::export_safetensors(r, out, dtype == "bf16" ? zs::DType::bf16 : zs::DType::f32, max_bytes);
      fmt::print("wrote {}{} ({} tensors, {}) from step {}\n", out, max_bytes > 0 ? " (sharded, with its index)" : "",
                 r.manifest().tensors.size(), dtype, r.manifest().step);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "zsckpt: {}\n", e.what());
    return 1;
  }
}
