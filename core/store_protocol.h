// The rendezvous store's wire format: pure encode/decode of requests and replies, bounds-checked.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace zs::store {

enum class Op : uint8_t { hello = 1, set = 2, get = 3, wait = 4, add = 5, check = 6 };

// hello: keys[0] = job token. set: keys[0], value. get: keys[0], number = timeout ms.
// wait: keys, number = timeout ms. add: keys[0], number = delta. check: keys.
struct Request {
  Op op = Op::hello;
  int64_t number = 0;
  std::vector<std::string> keys;
  std::vector<uint8_t> value;
};

// ok: value holds the result (get), number the counter (add) or 0/1 (check). !ok: value holds the error text.
struct Reply {
  bool ok = true;
  int64_t number = 0;
  std::vector<uint8_t> value;
};

std::vector<uint8_t> encode(const Request& r);
std::vector<uint8_t> encode(const Reply& r);
// Both throw zs::Error naming what is malformed; they never read outside `bytes`.
Request decode_request(std::span<const uint8_t> bytes);
Reply decode_reply(std::span<const uint8_t> bytes);

}  // namespace zs::store
