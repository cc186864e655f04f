// A backend's collective states, reused: a state goes back into use once its collective is done and no
// Work refers to it any more, so issuing a collective allocates nothing once the pool holds as many states
// as a run ever has outstanding (the engine keeps one Work per unit, plus those in flight).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

namespace zs {

template <typename State>
class WorkPool {
 public:
  // A free state (done, and held by nothing but the pool), or a new one from make().
  template <typename Make>
  std::shared_ptr<State> acquire(Make&& make) {
    std::lock_guard lk(mu_);
    // Only this pool hands out references, under its lock: a count of one means no Work, closure or stream
    // holds the state, so none can start holding it while it is being reused.
    for (const auto& s : states_)
      if (s.use_count() == 1 && s->done()) return s;
    states_.push_back(make());
    return states_.back();
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<State>> states_;
};

}  // namespace zs
