// Learning-rate schedules (pure): constant, or linear warm-up then cosine or linear decay to a floor.
#pragma once

#include <cstdint>

namespace zs {

enum class ScheduleKind : uint8_t { constant, cosine, linear };

struct Schedule {
  ScheduleKind kind = ScheduleKind::constant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;    // decay ends here (cosine / linear)
  double min_lr_ratio = 0.0;  // floor, as a fraction of the base lr

  // The lr for 1-based step `step`: warm-up ramps linearly from base/warmup to base over the first
  // warmup_steps, then the decay runs from base down to base * min_lr_ratio at total_steps and stays there.
  double lr(double base, int64_t step) const;
};

}  // namespace zs
