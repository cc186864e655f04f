// Store: the rendezvous key/value service (TCP client, server, key prefixes); guarded by the job token.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/socket.h"
#include "core/store_protocol.h"

namespace zs {

using Millis = std::chrono::milliseconds;

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, std::span<const uint8_t> value) = 0;
  // Blocks until `key` is set or `timeout` passes (then throws zs::Error naming the key).
  virtual std::vector<uint8_t> get(const std::string& key, Millis timeout) = 0;
  // Blocks until every key is set or `timeout` passes (then throws zs::Error naming the missing keys).
  virtual void wait(const std::vector<std::string>& keys, Millis timeout) = 0;
  // Adds `delta` to the integer counter `key` (created at 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // True when every key is set; never blocks.
  virtual bool check(const std::vector<std::string>& keys) = 0;

  void set_string(const std::string& key, const std::string& v);
  std::string get_string(const std::string& key, Millis timeout);
};

// The client. One TCP connection; thread-safe (requests are serialised).
class TcpStore final : public Store {
 public:
  static constexpr std::size_t kDefaultMaxMessage = 64u << 20;
  TcpStore(std::string host, int port, std::string token, Millis connect_timeout,
           std::size_t max_message = kDefaultMaxMessage);
  void set(const std::string& key, std::span<const uint8_t> value) override;
  std::vector<uint8_t> get(const std::string& key, Millis timeout) override;
  void wait(const std::vector<std::string>& keys, Millis timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  bool check(const std::vector<std::string>& keys) override;

 private:
  // Sends r and waits for the reply up to reply_timeout + slack (the slack covers a server-side timeout
  // that ends just as the reply is sent).
  store::Reply call(const store::Request& r, Millis reply_timeout, Millis slack);

  std::string host_;
  int port_;
  std::size_t max_message_;
  std::mutex mu_;
  net::Socket sock_;
};

// Every key is namespaced under `prefix` + "/" (per process group, per restart attempt, ...).
class PrefixStore final : public Store {
 public:
  PrefixStore(Store& base, std::string prefix) : base_(base), prefix_(std::move(prefix) + "/") {}
  void set(const std::string& key, std::span<const uint8_t> value) override { base_.set(prefix_ + key, value); }
  std::vector<uint8_t> get(const std::string& key, Millis t) override { return base_.get(prefix_ + key, t); }
  void wait(const std::vector<std::string>& keys, Millis t) override;
  int64_t add(const std::string& key, int64_t delta) override { return base_.add(prefix_ + key, delta); }
  bool check(const std::vector<std::string>& keys) override;

 private:
  std::vector<std::string> prefixed(const std::vector<std::string>& keys) const;
  Store& base_;
  std::string prefix_;
};

// The server: hosted by zsrun on node 0 (or by rank 0 when launched by Slurm/mpirun). A connection must
// first present the job token; connections without it, oversize or malformed messages are refused and
// logged, and the server carries on.
class StoreServer {
 public:
  StoreServer(const std::string& host, int port, std::string token,
              std::size_t max_message = TcpStore::kDefaultMaxMessage);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }
  // Connections refused so far (wrong token, oversize or malformed message).
  int refused() const { return refused_.load(); }

 private:
  void accept_loop();
  void serve(int fd);
  store::Reply handle(const store::Request& r);

  std::string token_;
  std::size_t max_message_;
  int port_ = 0;
  net::Socket listener_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<int> refused_{0};

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<uint8_t>> data_;
  std::list<int> conn_fds_;
  std::list<std::thread> conn_threads_;
  std::thread acceptor_;
};

}  // namespace zs
