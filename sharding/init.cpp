// Counter-based initialisation: SplitMix64 rounds over (seed, name key, index), Box-Muller for normals.
#include "sharding/init.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

namespace zs::init {
namespace {
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// A uniform double in (0, 1) from the top 53 bits (never 0, so log() is finite).
double unit(uint64_t bits) {
  return (static_cast<double>(bits >> 11) + 0.5) * 0x1p-53;
}
}  // namespace

uint64_t name_key(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

uint64_t counter_hash(uint64_t seed, uint64_t key, uint64_t counter) {
  return mix(mix(mix(seed) ^ key) ^ counter);
}

float Initializer::value(std::string_view name, uint64_t index) const {
  return at(name_key(name), index);
}

float Initializer::at(uint64_t key, uint64_t index) const {
  switch (kind) {
    case Kind::zeros:
      return 0.0f;
    case Kind::ones:
      return 1.0f;
    case Kind::uniform: {
      const double u = unit(counter_hash(seed, key, index));
      return static_cast<float>(a + (static_cast<double>(b) - a) * u);
    }
    case Kind::normal: {
      // Box-Muller on two independent draws per element (index 2i and 2i+1 of the stream).
      const double u1 = unit(counter_hash(seed, key, 2 * index)), u2 = unit(counter_hash(seed, key, 2 * index + 1));
      const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      return static_cast<float>(a + b * z);
    }
  }
  return 0.0f;
}

void Initializer::fill(std::string_view name, uint64_t first, int64_t count, float* out) const {
  const uint64_t key = name_key(name);
  auto range = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = at(key, first + static_cast<uint64_t>(i));
  };
  constexpr int64_t kPerThread = int64_t{1} << 18;  // below this a thread's start costs more than it saves
  const int64_t threads = std::clamp<int64_t>(count / kPerThread, 1, std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1) return range(0, count);
  std::vector<std::jthread> pool;
  for (int64_t t = 0; t < threads; ++t) pool.emplace_back(range, count * t / threads, count * (t + 1) / threads);
}

}  // namespace zs::init
