// The store client (TcpStore) and key prefixing (PrefixStore).
#include "core/store.h"

#include <fmt/ranges.h>

#include "core/error.h"

namespace zs {

void Store::set_string(const std::string& key, const std::string& v) {
  set(key, std::span(reinterpret_cast<const uint8_t*>(v.data()), v.size()));
}

std::string Store::get_string(const std::string& key, Millis timeout) {
  auto v = get(key, timeout);
  return std::string(v.begin(), v.end());
}

namespace {
// A reply may arrive up to this much after the server-side timeout (scheduling, network).
constexpr Millis kReplySlack{10000};
constexpr Millis kRequestTimeout{60000};
// Our server answers a hello at once; a listener that does not is some other program on the port.
constexpr Millis kHelloTimeout{30000};
}  // namespace

TcpStore::TcpStore(std::string host, int port, std::string token, Millis connect_timeout, std::size_t max_message)
    : host_(std::move(host)), port_(port), max_message_(max_message) {
  sock_ = net::connect_tcp(host_, port_, net::Clock::now() + connect_timeout);
  store::Request hello{store::Op::hello, 0, {std::move(token)}, {}};
  store::Reply r;
  try {
    r = call(hello, std::min(connect_timeout, kHelloTimeout), Millis{0});
  } catch (const Error& e) {
    ZS_FAIL(
        "connected to {}:{}, but what listens there did not answer as a rendezvous store ({}); is another "
        "program using that port? Pick another --master-port (MASTER_PORT)",
        host_, port_, e.what());
  }
  ZS_CHECK(r.ok, "the rendezvous store at {}:{} refused this process: {}", host_, port_,
           std::string(r.value.begin(), r.value.end()));
}

store::Reply TcpStore::call(const store::Request& req, Millis reply_timeout, Millis slack) {
  std::vector<uint8_t> bytes = store::encode(req);
  ZS_CHECK(bytes.size() <= max_message_, "store request for '{}' is {} bytes, over the {}-byte limit",
           req.keys.empty() ? "" : req.keys[0], bytes.size(), max_message_);
  std::lock_guard lk(mu_);
  auto deadline = net::Clock::now() + reply_timeout + slack;
  net::send_frame(sock_.fd(), bytes, deadline);
  std::vector<uint8_t> reply;
  switch (net::recv_frame(sock_.fd(), reply, max_message_, deadline)) {
    case net::RecvStatus::ok:
      break;
    case net::RecvStatus::closed:
      ZS_FAIL("the rendezvous store at {}:{} closed the connection (the launcher or rank 0 is gone?)", host_, port_);
    case net::RecvStatus::timeout:
      ZS_FAIL("the rendezvous store at {}:{} did not answer within {} ms", host_, port_,
              (reply_timeout + slack).count());
    case net::RecvStatus::oversize:
      ZS_FAIL("the rendezvous store sent a reply over {} bytes", max_message_);
  }
  return store::decode_reply(reply);
}

void TcpStore::set(const std::string& key, std::span<const uint8_t> value) {
  store::Reply r = call({store::Op::set, 0, {key}, {value.begin(), value.end()}}, kRequestTimeout, kReplySlack);
  ZS_CHECK(r.ok, "store set '{}' failed: {}", key, std::string(r.value.begin(), r.value.end()));
}

std::vector<uint8_t> TcpStore::get(const std::string& key, Millis timeout) {
  store::Reply r = call({store::Op::get, timeout.count(), {key}, {}}, timeout, kReplySlack);
  ZS_CHECK(r.ok, "store get '{}' failed: {}", key, std::string(r.value.begin(), r.value.end()));
  return std::move(r.value);
}

void TcpStore::wait(const std::vector<std::string>& keys, Millis timeout) {
  store::Reply r = call({store::Op::wait, timeout.count(), keys, {}}, timeout, kReplySlack);
  ZS_CHECK(r.ok, "store wait failed: {}", std::string(r.value.begin(), r.value.end()));
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  store::Reply r = call({store::Op::add, delta, {key}, {}}, kRequestTimeout, kReplySlack);
  ZS_CHECK(r.ok, "store add '{}' failed: {}", key, std::string(r.value.begin(), r.value.end()));
  return r.number;
}

bool TcpStore::check(const std::vector<std::string>& keys) {
  store::Reply r = call({store::Op::check, 0, keys, {}}, kRequestTimeout, kReplySlack);
  ZS_CHECK(r.ok, "store check failed: {}", std::string(r.value.begin(), r.value.end()));
  return r.number != 0;
}

std::vector<std::string> PrefixStore::prefixed(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(prefix_ + k);
  return out;
}

void PrefixStore::wait(const std::vector<std::string>& keys, Millis t) {
  base_.wait(prefixed(keys), t);
}
bool PrefixStore::check(const std::vector<std::string>& keys) {
  return base_.check(prefixed(keys));
}

}  // namespace zs
