// The README's training loop, compiled against the installed headers and library: two units, SGD, a
// gradient of 1 everywhere. After the step every parameter must be exactly its value before minus lr, on
// every rank (gradients are averaged over the ranks, and each rank writes the same 1). Exit 1 otherwise.
#include <cstdio>
#include <vector>

#include "runtime/engine.h"

int main() {
  try {
    zs::Config cfg;
    cfg.device = "cpu";
    cfg.zero.stage = 3;
    cfg.optimizer.type = zs::kernels::Optimizer::sgd;
    cfg.optimizer.lr = 0.5f;
    cfg.optimizer.weight_decay = 0.0f;
    zs::Engine engine(cfg);
    std::vector<zs::UnitId> units;
    for (int l = 0; l < 2; ++l)
      units.push_back(engine.add_unit("h." + std::to_string(l), {{"w", {5, 3}}, {"b", {3}, true, false}}));
    engine.init_params(zs::init::normal(0.02f, /*seed=*/1337));
    std::vector<std::vector<float>> before;
    for (auto u : units)
      for (const char* t : {"w", "b"}) before.push_back(engine.read_param(u, t));
    for (auto u : units) auto p = engine.gather(u);
    for (auto it = units.rbegin(); it != units.rend(); ++it) {
      auto p = engine.gather(*it);
      for (const char* t : {"w", "b"}) {
        zs::TensorView g = engine.grads(*it, t);
        float* x = static_cast<float*>(g.data);
        for (int64_t e = 0; e < g.numel(); ++e) x[e] += 1.0f;
      }
      engine.reduce_grads(*it);
    }
    engine.step();
    std::size_t k = 0, wrong = 0;
    for (auto u : units)
      for (const char* t : {"w", "b"}) {
        const std::vector<float> after = engine.read_param(u, t);
        for (std::size_t e = 0; e < after.size(); ++e) wrong += after[e] != before[k][e] - 0.5f;
        ++k;
      }
    std::printf("rank %d of %d: %zu of the parameters differ from before - lr\n", engine.comm().rank(),
                engine.comm().size(), wrong);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
