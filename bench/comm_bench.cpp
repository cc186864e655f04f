// comm_bench: nccl-tests' table (time, algbw, busbw, #wrong; out-of-place and in-place) for all_gather,
// reduce_scatter and all_reduce over a size sweep, on Gloo (CPU) or NCCL (CUDA). Launch with zsrun.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/bootstrap.h"
#include "core/buffer.h"
#include "core/byte_size.h"
#include "core/error.h"
#include "runtime/cli.h"

namespace {

using namespace zs;

struct Args {
  std::string backend = "gloo";
  std::string ops = "all";
  std::string dtype = "f32";
  std::string min_bytes = "8";
  std::string max_bytes = "32M";
  int factor = 4;
  int iters = 20;
  int warmup = 3;
};

int64_t parse_size(const std::string& s) {
  const std::optional<double> bytes = parse_byte_size(s);
  ZS_CHECK(bytes.has_value(), "size '{}': expected a number of bytes with an optional unit (K, M, G, KiB, MB, ...)", s);
  return static_cast<int64_t>(*bytes);
}

// Small integers: exact in every dtype, and so are sums over a few ranks.
float pattern(int rank, int64_t i) {
  return static_cast<float>((i * 7 + rank * 3) % 17 - 8);
}

struct Bench {
  Comm& comm;
  DType dtype;
  Args args;

  // Elements of the full buffer (all_gather output, reduce_scatter input, all_reduce buffer).
  struct Shape {
    int64_t full, shard;
  };

  Work issue(CollectiveKind k, Buffer& in, Buffer& out, Shape s, bool in_place) {
    const int r = comm.rank();
    const std::size_t es = dtype_size(dtype);
    switch (k) {
      case CollectiveKind::all_gather: {
        TensorView o = out.view(dtype, s.full);
        TensorView i = in_place ? o.slice(s.shard * r, s.shard) : in.view(dtype, s.shard);
        return comm.all_gather(i, o);
      }
      case CollectiveKind::reduce_scatter: {
        TensorView i = in.view(dtype, s.full);
        TensorView o = in_place ? i.slice(s.shard * r, s.shard) : out.view(dtype, s.shard);
        return comm.reduce_scatter(i, o, ReduceOp::sum);
      }
      default: {
        TensorView i = in.view(dtype, s.full);
        return comm.all_reduce(i, in_place ? i : out.view(dtype, s.full), ReduceOp::sum);
      }
    }
    (void)es;
  }

  // Fills the inputs with the pattern, runs once, counts wrong elements on this rank.
  int64_t check(CollectiveKind k, Buffer& in, Buffer& out, Shape s, bool in_place) {
    const int r = comm.rank(), n = comm.size();
    const std::size_t es = dtype_size(dtype);
    const Device dev = comm.device();
    const int64_t in_elems = k == CollectiveKind::all_gather ? s.shard : s.full;
    const int64_t in_base = k == CollectiveKind::all_gather ? s.shard * r : 0;
    std::vector<uint8_t> host(static_cast<std::size_t>(s.full) * es);
    for (int64_t i = 0; i < in_elems; ++i)
      store_from_f32(host.data(), dtype, static_cast<std::size_t>(i), pattern(r, in_base + i));
    if (k == CollectiveKind::all_gather && in_place)
      memory_copy(static_cast<char*>(out.data()) + s.shard * r * static_cast<int64_t>(es), dev, host.data(),
                  Device::cpu(), static_cast<std::size_t>(s.shard) * es);
    else
      memory_copy(in.data(), dev, host.data(), Device::cpu(), static_cast<std::size_t>(in_elems) * es);
    issue(k, in, out, s, in_place).wait();
    const int64_t res_elems = k == CollectiveKind::reduce_scatter ? s.shard : s.full;
    const char* res =
        static_cast<const char*>(k == CollectiveKind::all_gather ? out.data() : (in_place ? in.data() : out.data()));
    if (k == CollectiveKind::reduce_scatter && in_place) res += s.shard * r * static_cast<int64_t>(es);
    memory_copy(host.data(), Device::cpu(), res, dev, static_cast<std::size_t>(res_elems) * es);
    int64_t wrong = 0;
    for (int64_t i = 0; i < res_elems; ++i) {
      float want = 0;
      if (k == CollectiveKind::all_gather)
        want = pattern(static_cast<int>(i / s.shard), i);
      else {
        const int64_t gi = k == CollectiveKind::reduce_scatter ? s.shard * r + i : i;
        for (int p = 0; p < n; ++p) want += pattern(p, gi);
      }
      wrong += load_as_f32(host.data(), dtype, static_cast<std::size_t>(i)) != want;
    }
    return wrong;
  }

  // Returns {max over ranks of the mean time per op in us, total wrong over ranks}.
  std::pair<double, int64_t> measure(CollectiveKind k, Buffer& in, Buffer& out, Shape s, bool in_place) {
    for (int i = 0; i < args.warmup; ++i) issue(k, in, out, s, in_place).wait();
    comm.barrier().wait();
    auto t0 = std::chrono::steady_clock::now();
    Work last;
    for (int i = 0; i < args.iters; ++i) last = issue(k, in, out, s, in_place);
    last.wait();
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / args.iters;
    int64_t wrong = check(k, in, out, s, in_place);
    float stats[2] = {static_cast<float>(us), static_cast<float>(wrong)};
    float reduced[2];
    Buffer dev(sizeof stats, MemoryKind::device, comm.device(), MemCategory::other);
    memory_copy(dev.data(), comm.device(), stats, Device::cpu(), sizeof stats);
    // Time: the slowest rank's; #wrong: summed (each rank's count is exact below 2^24).
    TensorView v = dev.view(DType::f32, 1);
    comm.all_reduce(v, v, ReduceOp::max).wait();
    TensorView w = dev.view(DType::f32, 2).slice(1, 1);
    comm.all_reduce(w, w, ReduceOp::sum).wait();
    memory_copy(reduced, Device::cpu(), dev.data(), comm.device(), sizeof reduced);
    return {reduced[0], static_cast<int64_t>(reduced[1])};
  }
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"comm_bench: collective bandwidth in nccl-tests' format, every value checked. Launch with zsrun.",
               "comm_bench"};
  app.add_option("--backend", a.backend, "gloo (CPU) or nccl (CUDA)")
      ->check(CLI::IsMember({"gloo", "nccl"}))
      ->capture_default_str();
  app.add_option("--op", a.ops, "all_gather, reduce_scatter, all_reduce or all")
      ->check(CLI::IsMember({"all_gather", "reduce_scatter", "all_reduce", "all"}))
      ->capture_default_str();
  app.add_option("--dtype", a.dtype, "f32, bf16 or f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}))
      ->capture_default_str();
  app.add_option("-b,--min-bytes", a.min_bytes, "smallest buffer (K/M/G suffixes)")->capture_default_str();
  app.add_option("-e,--max-bytes", a.max_bytes, "largest buffer")->capture_default_str();
  app.add_option("-f,--step-factor", a.factor, "size multiplier between rows")
      ->check(CLI::Range(2, 1024))
      ->capture_default_str();
  app.add_option("-n,--iters", a.iters, "timed iterations per size")->check(zs::positive())->capture_default_str();
  app.add_option("-w,--warmup", a.warmup, "untimed iterations per size")
      ->check(zs::non_negative())
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    ProcessGroupOptions po;
    po.backend = a.backend == "gloo" ? Backend::gloo : Backend::nccl;
    ProcessGroup pg = init_process_group(po);
    Comm& comm = *pg.world;
    const DType dtype = dtype_parse(a.dtype);
    const std::size_t es = dtype_size(dtype);
    const int n = comm.size();
    Bench bench{comm, dtype, a};
    std::vector<CollectiveKind> kinds;
    if (a.ops == "all" || a.ops == "all_gather") kinds.push_back(CollectiveKind::all_gather);
    if (a.ops == "all" || a.ops == "reduce_scatter") kinds.push_back(CollectiveKind::reduce_scatter);
    if (a.ops == "all" || a.ops == "all_reduce") kinds.push_back(CollectiveKind::all_reduce);
    const int64_t max_bytes = parse_size(a.max_bytes), min_bytes = parse_size(a.min_bytes);
    const bool root = comm.rank() == 0;
    if (root)
      std::printf("# comm_bench: backend %s, %d ranks, dtype %s, %d iterations (+%d warm-up)\n", a.backend.c_str(), n,
                  a.dtype.c_str(), a.iters, a.warmup);
    int64_t total_wrong = 0;
    const int64_t max_elems = std::max<int64_t>(max_bytes / static_cast<int64_t>(es), n);
    Buffer in(static_cast<std::size_t>(max_elems) * es, MemoryKind::device, comm.device(), MemCategory::other);
    Buffer out(static_cast<std::size_t>(max_elems) * es, MemoryKind::device, comm.device(), MemCategory::other);
    for (CollectiveKind k : kinds) {
      if (root) {
        std::printf("#\n# %s\n", std::string(collective_name(k)).c_str());
        std::printf("# %12s %12s %6s %6s   %9s %8s %8s %6s   %9s %8s %8s %6s\n", "", "", "", "", "out-of-place", "", "",
                    "", "in-place", "", "", "");
        std::printf("# %12s %12s %6s %6s   %9s %8s %8s %6s   %9s %8s %8s %6s\n", "size", "count", "type", "redop",
                    "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong");
        std::printf("# %12s %12s %6s %6s   %9s %8s %8s %6s   %9s %8s %8s %6s\n", "(B)", "(elements)", "", "", "(us)",
                    "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
      }
      const double bus_factor = k == CollectiveKind::all_reduce ? 2.0 * (n - 1) / n : static_cast<double>(n - 1) / n;
      for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= a.factor) {
        // Full-buffer elements, a multiple of the rank count so shards are equal.
        const int64_t full = std::max<int64_t>(bytes / static_cast<int64_t>(es) / n, 1) * n;
        Bench::Shape s{full, full / n};
        const double size_b = static_cast<double>(full) * static_cast<double>(es);
        auto [t_oop, w_oop] = bench.measure(k, in, out, s, false);
        auto [t_ip, w_ip] = bench.measure(k, in, out, s, true);
        total_wrong += w_oop + w_ip;
        if (root) {
          const double alg_oop = size_b / t_oop / 1e3, alg_ip = size_b / t_ip / 1e3;
          std::printf("  %12.0f %12ld %6s %6s   %9.1f %8.3f %8.3f %6ld   %9.1f %8.3f %8.3f %6ld\n", size_b,
                      static_cast<long>(full), a.dtype.c_str(), k == CollectiveKind::all_gather ? "none" : "sum", t_oop,
                      alg_oop, alg_oop * bus_factor, static_cast<long>(w_oop), t_ip, alg_ip, alg_ip * bus_factor,
                      static_cast<long>(w_ip));
          std::fflush(stdout);
        }
      }
    }
    if (root)
      std::printf("# Out of bounds values : %ld %s\n", static_cast<long>(total_wrong), total_wrong ? "FAILED" : "OK");
    comm.barrier().wait();
    return total_wrong ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_bench: %s\n", e.what());
    return 1;
  }
}
