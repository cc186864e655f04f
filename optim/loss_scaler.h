// Loss scaling for f16 (pure state machine). Dynamic: start at 2^16 (or as configured); an overflow skips
// the step and halves the scale, never below min_scale; after `window` steps without overflow the scale
// doubles, but after an overflow only once `hysteresis` windows have passed cleanly. Fixed: the scale never
// changes, and an overflow skips the step.
#pragma once

#include <cstdint>

namespace zs {

struct LossScaler {
  double scale = 65536.0;
  int64_t window = 1000;
  int hysteresis = 2;
  double min_scale = 1.0;
  bool fixed = false;

  int64_t clean_steps = 0;  // steps since the last overflow or growth
  int windows_to_wait = 0;  // clean windows still needed before growth resumes

  // A dynamic scale that cannot halve any more: an overflow now would be skipped at this scale forever.
  bool at_minimum() const { return !fixed && scale <= min_scale; }

  // Records one step's outcome; returns whether the step must be skipped.
  bool update(bool overflow) {
    if (fixed) return overflow;
    if (overflow) {
      scale = scale / 2 > min_scale ? scale / 2 : min_scale;
      clean_steps = 0;
      windows_to_wait = hysteresis - 1;
      return true;
    }
    if (++clean_steps >= window) {
      clean_steps = 0;
      if (windows_to_wait > 0)
        --windows_to_wait;
      else
        scale *= 2;
    }
    return false;
  }
};

}  // namespace zs
