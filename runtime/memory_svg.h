// The memory timeline as a picture (pure): one rank's report from Engine::write_memory_report drawn as
// stacked areas per ledger category over time, with the step's phases (forward, backward, step) as bands
// and the plan's total as a dashed line.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace zs {

std::string memory_timeline_svg(const nlohmann::json& report);

}  // namespace zs
