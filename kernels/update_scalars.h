// Per-call optimizer scalars computed once on the host (bias corrections, step size, decay factor):
// the CPU and CUDA update loops read only these.
#pragma once

#include <cmath>

#include "kernels/kernels.h"

namespace zs::kernels {

struct UpdateScalars {
  Optimizer kind = Optimizer::adamw;
  float grad_scale = 1.0f;
  float lr = 0.0f;
  float beta1 = 0.0f, beta2 = 0.0f;
  float one_minus_beta1 = 0.0f, one_minus_beta2 = 0.0f;
  float eps = 0.0f;
  float weight_decay = 0.0f;
  float step_size = 0.0f;              // Adam: lr / (1 - beta1^t)
  float bias_correction2_sqrt = 1.0f;  // Adam: sqrt(1 - beta2^t)
  float one_minus_dampening = 1.0f;    // SGD
  bool nesterov = false;
  bool first_step = false;  // SGD: momentum buffer starts as the gradient
};

// Pure. Bias corrections in f64 (beta^t underflows gracefully at large t).
inline UpdateScalars make_scalars(const OptimizerHyper& h, const UpdateArgs& a) {
  UpdateScalars s;
  s.kind = h.kind;
  s.grad_scale = a.grad_scale;
  s.lr = h.lr;
  s.beta1 = h.beta1;
  s.beta2 = h.beta2;
  s.one_minus_beta1 = 1.0f - h.beta1;
  s.one_minus_beta2 = 1.0f - h.beta2;
  s.eps = h.eps;
  s.weight_decay = h.weight_decay;
  const double t = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), t);
  s.step_size = static_cast<float>(h.lr / bc1);
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.one_minus_dampening = 1.0f - h.dampening;
  s.nesterov = h.nesterov;
  s.first_step = h.step <= 1;
  return s;
}

}  // namespace zs::kernels
