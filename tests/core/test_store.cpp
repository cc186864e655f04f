// The rendezvous store: concurrent clients, blocking gets, timeouts, wrong tokens and oversize messages.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <thread>

#include "core/error.h"
#include "core/store.h"

namespace zs {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<TcpStore> client(const StoreServer& s, const std::string& token = "secret") {
  return std::make_unique<TcpStore>("127.0.0.1", s.port(), token, 5000ms);
}

TEST(Store, SetGetAddCheckAndPrefixes) {
  StoreServer server("127.0.0.1", 0, "secret");
  auto c = client(server);
  c->set_string("a", "hello");
  EXPECT_EQ(c->get_string("a", 1000ms), "hello");
  EXPECT_EQ(c->add("n", 5), 5);
  EXPECT_EQ(c->add("n", -2), 3);
  EXPECT_TRUE(c->check({"a", "n"}));
  EXPECT_FALSE(c->check({"a", "missing"}));
  PrefixStore p(*c, "grp");
  p.set_string("a", "inner");
  EXPECT_EQ(c->get_string("grp/a", 1000ms), "inner");
  EXPECT_EQ(c->get_string("a", 1000ms), "hello");
  EXPECT_TRUE(p.check({"a"}));
}

// A value far larger than a socket buffer leaves in several sendmsg calls each way and comes back intact.
TEST(Store, LargeValuesRoundTripWhole) {
  StoreServer server("127.0.0.1", 0, "secret");
  TcpStore c("127.0.0.1", server.port(), "secret", 5000ms);
  std::vector<uint8_t> big(24 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 131 + (i >> 16));
  c.set("big", big);
  EXPECT_TRUE(c.get("big", 5000ms) == big);
}

TEST(Store, ConcurrentClientsAddAndBlockingGets) {
  StoreServer server("127.0.0.1", 0, "secret");
  constexpr int kClients = 8, kAdds = 100;
  std::vector<std::thread> ts;
  std::vector<std::string> got(kClients);
  for (int i = 0; i < kClients; ++i)
    ts.emplace_back([&, i] {
      auto c = client(server);
      for (int k = 0; k < kAdds; ++k) c->add("counter", 1);
      // Everybody waits for the key the last client sets.
      got[static_cast<std::size_t>(i)] = c->get_string("go", 10000ms);
    });
  auto c = client(server);
  std::this_thread::sleep_for(50ms);
  c->wait({"counter"}, 5000ms);
  while (c->add("counter", 0) < kClients * kAdds) std::this_thread::sleep_for(5ms);
  c->set_string("go", "now");
  for (auto& t : ts) t.join();
  for (auto& g : got) EXPECT_EQ(g, "now");
  EXPECT_EQ(c->add("counter", 0), kClients * kAdds);
}

TEST(Store, GetAndWaitTimeOutNamingTheKeys) {
  StoreServer server("127.0.0.1", 0, "secret");
  auto c = client(server);
  c->set_string("present", "1");
  auto t0 = std::chrono::steady_clock::now();
  try {
    c->get("absent", 300ms);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent"), std::string::npos) << e.what();
  }
  auto dt = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(dt, 290ms);
  EXPECT_LT(dt, 5000ms);
  try {
    c->wait({"present", "k1", "k2"}, 200ms);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("k1, k2"), std::string::npos) << m;
    EXPECT_EQ(m.find("present"), std::string::npos) << m;
  }
  // The connection stays usable after a timeout.
  EXPECT_EQ(c->get_string("present", 100ms), "1");
}

TEST(Store, WrongTokenIsRefusedAndServerCarriesOn) {
  StoreServer server("127.0.0.1", 0, "secret");
  try {
    client(server, "guess");
    FAIL() << "a wrong token was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wrong job token"), std::string::npos) << e.what();
  }
  EXPECT_EQ(server.refused(), 1);
  auto c = client(server);
  c->set_string("k", "v");
  EXPECT_EQ(c->get_string("k", 100ms), "v");
}

TEST(Store, OversizeAndMalformedMessagesAreRefused) {
  StoreServer server("127.0.0.1", 0, "secret", 1024);
  {  // client side: refuses to send over the limit
    TcpStore c("127.0.0.1", server.port(), "secret", 5000ms, 1024);
    std::vector<uint8_t> big(4096, 1);
    EXPECT_THROW(c.set("big", big), Error);
  }
  auto raw = [&](const std::vector<uint8_t>& bytes) {
    net::Socket s = net::connect_tcp("127.0.0.1", server.port(), net::Clock::now() + 5s);
    ::send(s.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    std::vector<uint8_t> reply;
    auto st = net::recv_frame(s.fd(), reply, 1 << 20, net::Clock::now() + 5s);
    EXPECT_EQ(st, net::RecvStatus::ok);
    store::Reply r = store::decode_reply(reply);
    EXPECT_FALSE(r.ok);
    // The server closed this connection after refusing.
    EXPECT_EQ(net::recv_frame(s.fd(), reply, 1 << 20, net::Clock::now() + 5s), net::RecvStatus::closed);
    return std::string(r.value.begin(), r.value.end());
  };
  EXPECT_NE(raw({0x00, 0x00, 0x00, 0x40}).find("exceeds"), std::string::npos);                    // announces 1 GiB
  EXPECT_NE(raw({0x03, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff}).find("unknown"), std::string::npos);  // garbage
  EXPECT_EQ(server.refused(), 2);
  auto c = client(server);  // still serving
  c->set_string("k", "v");
  EXPECT_EQ(c->get_string("k", 100ms), "v");
}

TEST(Store, ProtocolRoundTripsAndRejectsTruncation) {
  store::Request r{store::Op::wait, 1234, {"a", "bb", ""}, {1, 2, 3}};
  auto bytes = store::encode(r);
  store::Request back = store::decode_request(bytes);
  EXPECT_EQ(back.op, r.op);
  EXPECT_EQ(back.number, 1234);
  EXPECT_EQ(back.keys, r.keys);
  EXPECT_EQ(back.value, r.value);
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(store::decode_request(std::span(bytes.data(), n)), Error) << n;
}

TEST(Store, ConnectingToNothingTimesOut) {
  int port = 0;
  { net::Socket s = net::listen_tcp("127.0.0.1", 0, &port); }  // a port nobody listens on now
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(TcpStore("127.0.0.1", port, "x", 300ms), Error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

// Something else listening on the port (it accepts and never answers): a clear error naming the port, not
// a wait for the whole rendezvous timeout.
TEST(Store, AListenerThatIsNotAStoreIsNamed) {
  int port = 0;
  net::Socket silent = net::listen_tcp("127.0.0.1", 0, &port);
  auto t0 = std::chrono::steady_clock::now();
  try {
    TcpStore("127.0.0.1", port, "x", 500ms);
    FAIL() << "a silent listener was taken for a store";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did not answer as a rendezvous store"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

}  // namespace
}  // namespace zs
