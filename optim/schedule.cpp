// LR schedule arithmetic.
#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace zs {

double Schedule::lr(double base, int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps)
    return base * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::constant) return base;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double t = std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
  const double floor = base * min_lr_ratio;
  if (kind == ScheduleKind::linear) return floor + (base - floor) * (1.0 - t);
  return floor + (base - floor) * 0.5 * (1.0 + std::cos(3.141592653589793 * t));
}

}  // namespace zs
