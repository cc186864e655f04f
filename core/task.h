// Task: a move-only void() callable kept in place, never on the heap — what a stream queues per operation.
// std::function allocates for any closure over two pointers, which would put an allocation in every copy,
// cast and collective; a closure that does not fit kBytes is a compile error (capture pointers and sizes,
// not tensors).
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace zs {

class Task {
 public:
  static constexpr std::size_t kBytes = 64;

  Task() = default;
  Task(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): an empty task, as for std::function
  template <typename F>
  requires(!std::is_same_v<std::decay_t<F>, Task> && std::is_invocable_r_v<void, std::decay_t<F>&>)
      Task(F&& f) {  // NOLINT(google-explicit-constructor): a closure converts, as it does to std::function
    using D = std::decay_t<F>;
    static_assert(sizeof(D) <= kBytes, "the closure is too large for a Task: capture pointers and sizes");
    static_assert(alignof(D) <= alignof(std::max_align_t), "the closure is over-aligned for a Task");
    static_assert(std::is_nothrow_move_constructible_v<D>, "a Task's closure must move without throwing");
    ::new (static_cast<void*>(buf_)) D(std::forward<F>(f));
    ops_ = &kOps<D>;
  }
  Task(Task&& o) noexcept { take(o); }
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      reset();
      take(o);
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  explicit operator bool() const { return ops_ != nullptr; }
  void operator()() { ops_->call(buf_); }
  // Destroys the closure (and what it captured); the task is empty after.
  void reset() {
    if (ops_) std::exchange(ops_, nullptr)->destroy(buf_);
  }

 private:
  struct Ops {
    void (*call)(void*);
    void (*move)(void* from, void* to);  // move-constructs at `to`, destroys `from`
    void (*destroy)(void*);
  };
  template <typename D>
  static constexpr Ops kOps = {
      [](void* p) { (*static_cast<D*>(p))(); },
      [](void* from, void* to) {
        ::new (to) D(std::move(*static_cast<D*>(from)));
        static_cast<D*>(from)->~D();
      },
      [](void* p) { static_cast<D*>(p)->~D(); },
  };
  void take(Task& o) noexcept {
    if (!o.ops_) return;
    o.ops_->move(o.buf_, buf_);
    ops_ = std::exchange(o.ops_, nullptr);
  }

  alignas(std::max_align_t) unsigned char buf_[kBytes];
  const Ops* ops_ = nullptr;
};

}  // namespace zs
