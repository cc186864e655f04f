// World-size-invariant initialisation: every element's value is a pure function of (seed, tensor name,
// element index), from a counter-based generator, so a model initialised at any world size, on any
// device, is bit-identical.
#pragma once

#include <cstdint>
#include <string_view>

namespace zs::init {

enum class Kind : uint8_t { normal, uniform, zeros, ones };

struct Initializer {
  Kind kind = Kind::normal;
  float a = 0.0f;   // normal: mean; uniform: low
  float b = 0.02f;  // normal: std; uniform: high
  uint64_t seed = 0;
  // The value of element `index` of tensor `name` (pure).
  float value(std::string_view name, uint64_t index) const;
  // out[i] = value(name, first + i) for i in [0, count): the same values, the name hashed once and a large
  // range spread over the machine's cores (a 1.3 B-parameter model initialises in seconds, not minutes).
  void fill(std::string_view name, uint64_t first, int64_t count, float* out) const;

 private:
  float at(uint64_t key, uint64_t index) const;
};

inline Initializer normal(float std, uint64_t seed, float mean = 0.0f) {
  return {Kind::normal, mean, std, seed};
}
inline Initializer uniform(float low, float high, uint64_t seed) {
  return {Kind::uniform, low, high, seed};
}
inline Initializer zeros() {
  return {Kind::zeros, 0, 0, 0};
}
inline Initializer ones() {
  return {Kind::ones, 0, 0, 0};
}

// 64-bit FNV-1a of a tensor name: the per-tensor key of the generator.
uint64_t name_key(std::string_view name);
// Counter-based hash (SplitMix64 finaliser rounds): 64 uniform bits for (seed, key, counter).
uint64_t counter_hash(uint64_t seed, uint64_t key, uint64_t counter);

}  // namespace zs::init
