// Store message encoding: little-endian integers, length-prefixed strings, every read bounds-checked.
#include "core/store_protocol.h"

#include "core/error.h"

namespace zs::store {
namespace {

class Writer {
 public:
  void u8(uint8_t v) { out.push_back(v); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i64(int64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
  }
  void bytes(const void* p, std::size_t n) {
    u32(static_cast<uint32_t>(n));
    out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  }
  std::vector<uint8_t> out;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  uint8_t u8() { return take(1)[0]; }
  uint32_t u32() {
    auto s = take(4);
    return s[0] | (s[1] << 8) | (s[2] << 16) | (static_cast<uint32_t>(s[3]) << 24);
  }
  int64_t i64() {
    auto s = take(8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | s[static_cast<std::size_t>(i)];
    return static_cast<int64_t>(v);
  }
  std::span<const uint8_t> bytes() { return take(u32()); }
  void expect_end() const { ZS_CHECK(pos_ == b_.size(), "store message has {} trailing bytes", b_.size() - pos_); }

 private:
  std::span<const uint8_t> take(std::size_t n) {
    ZS_CHECK(n <= b_.size() - pos_, "store message truncated: needs {} more bytes at offset {}, has {}", n, pos_,
             b_.size() - pos_);
    auto s = b_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::span<const uint8_t> b_;
  std::size_t pos_ = 0;
};

}  // namespace

std::vector<uint8_t> encode(const Request& r) {
  Writer w;
  w.u8(static_cast<uint8_t>(r.op));
  w.i64(r.number);
  w.u32(static_cast<uint32_t>(r.keys.size()));
  for (const auto& k : r.keys) w.bytes(k.data(), k.size());
  w.bytes(r.value.data(), r.value.size());
  return std::move(w.out);
}

std::vector<uint8_t> encode(const Reply& r) {
  Writer w;
  w.u8(r.ok ? 1 : 0);
  w.i64(r.number);
  w.bytes(r.value.data(), r.value.size());
  return std::move(w.out);
}

Request decode_request(std::span<const uint8_t> bytes) {
  Reader rd(bytes);
  Request r;
  uint8_t op = rd.u8();
  ZS_CHECK(op >= 1 && op <= 6, "unknown store operation {}", op);
  r.op = static_cast<Op>(op);
  r.number = rd.i64();
  uint32_t nkeys = rd.u32();
  ZS_CHECK(nkeys <= bytes.size() / 4, "store message claims {} keys in {} bytes", nkeys, bytes.size());
  r.keys.reserve(nkeys);
  for (uint32_t i = 0; i < nkeys; ++i) {
    auto k = rd.bytes();
    r.keys.emplace_back(k.begin(), k.end());
  }
  auto v = rd.bytes();
  r.value.assign(v.begin(), v.end());
  rd.expect_end();
  const bool one_key = r.op == Op::hello || r.op == Op::set || r.op == Op::get || r.op == Op::add;
  ZS_CHECK(!one_key || r.keys.size() == 1, "store operation {} needs exactly one key, got {}", op, r.keys.size());
  return r;
}

Reply decode_reply(std::span<const uint8_t> bytes) {
  Reader rd(bytes);
  Reply r;
  r.ok = rd.u8() != 0;
  r.number = rd.i64();
  auto v = rd.bytes();
  r.value.assign(v.begin(), v.end());
  rd.expect_end();
  return r;
}

}  // namespace zs::store
