// Engine::write_memory_report: the measured side of zsmem.
#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "runtime/engine.h"
#include "runtime/file_io.h"

namespace zs {

void Engine::write_memory_report(const std::string& dir) const {
  MemoryPlan plan = memory_plan();
  plan.device[static_cast<std::size_t>(MemCategory::activations)] += declared_activations_.first;
  plan.host[static_cast<std::size_t>(MemCategory::activations)] += declared_activations_.second;
  const MemoryReport m = memory();
  nlohmann::ordered_json j;
  j["rank"] = comm_->rank();
  j["world"] = comm_->size();
  j["stage"] = cfg_.zero.stage;
  j["device"] = device_.is_cpu() ? "cpu" : "cuda";
  // The device's memory, then the host's (offload, Gloo's staging): planned, current and peak per category.
  for (int c = 0; c < kMemCategoryCount; ++c) {
    const auto i = static_cast<std::size_t>(c);
    const std::string name(mem_category_name(static_cast<MemCategory>(c)));
    j["categories"][name] = {
        {"planned", plan.device[i]}, {"current", m.on_device[i].current}, {"peak", m.on_device[i].peak}};
    j["host_categories"][name] = {
        {"planned", plan.host[i]}, {"current", m.on_host[i].current}, {"peak", m.on_host[i].peak}};
  }
  j["planned_total"] = plan.device_total();
  j["peak_total"] = m.device_total.peak;
  j["host_planned_total"] = plan.host_total();
  j["host_peak_total"] = m.host_total.peak;
  j["disk_planned"] = plan.disk;  // offload.*: nvme: this rank's files, planned and as the filesystem holds them
  j["disk_allocated"] = offload_ ? offload_->disk_allocated() : 0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  j["peak_rss"] = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  if (device_.is_cuda()) {  // the whole card, now: the ledger's buffers, the CUDA context, library workspaces
    const DeviceMemoryUse use = device_memory_use(device_);
    j["cuda_in_use"] = use.used;
    j["cuda_total"] = use.total;
  }
  // The timelines of this engine's device and of the host: [seconds, bytes per category...], at most ~4000
  // points each (every k-th, always keeping the last), and the phase marks.
  MemoryLedger& l = MemoryLedger::global();
  l.mark("end");
  const std::vector<MemoryLedger::TracePoint> all = l.trace_points();
  auto timeline = [&](MemPlace place) {
    std::vector<const MemoryLedger::TracePoint*> pts;
    for (const auto& p : all)
      if (p.place == place) pts.push_back(&p);
    const std::size_t stride = std::max<std::size_t>(1, pts.size() / 4000);
    nlohmann::ordered_json tl = nlohmann::ordered_json::array();
    for (std::size_t i = 0; i < pts.size(); ++i) {
      if (i % stride != 0 && i + 1 != pts.size()) continue;
      nlohmann::ordered_json row = nlohmann::ordered_json::array({pts[i]->seconds});
      for (int64_t b : pts[i]->current) row.push_back(b);
      tl.push_back(row);
    }
    return tl;
  };
  j["timeline"] = timeline(device_);
  j["host_timeline"] = timeline(MemPlace::host_memory());
  auto& mk = j["marks"] = nlohmann::ordered_json::array();
  for (const auto& m : l.trace_marks()) mk.push_back({m.seconds, m.label});
  std::filesystem::create_directories(dir);
  write_file_atomic((std::filesystem::path(dir) / ("rank-" + std::to_string(comm_->rank()) + ".json")).string(),
                    j.dump(1) + "\n");
}

}  // namespace zs
