// The rendezvous store server: one thread per connection, token check first, bounded messages.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/log.h"
#include "core/store.h"

namespace zs {
namespace {

bool same_token(const std::string& a, const std::string& b) {
  // Constant time in the token's content, so the comparison leaks nothing but the length.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

store::Reply error_reply(const std::string& msg) {
  return {false, 0, {msg.begin(), msg.end()}};
}

constexpr auto kIdle = std::chrono::hours(24 * 365);

}  // namespace

StoreServer::StoreServer(const std::string& host, int port, std::string token, std::size_t max_message)
    : token_(std::move(token)), max_message_(max_message) {
  listener_ = net::listen_tcp(host, port, &port_);
  ZS_CHECK_SYS(::pipe2(wake_, O_CLOEXEC), "store wake-up pipe");
  acceptor_ = std::thread([this] { accept_loop(); });
}

StoreServer::~StoreServer() {
  stop_ = true;
  (void)!::write(wake_[1], "x", 1);
  acceptor_.join();
  {
    std::lock_guard lk(mu_);
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  changed_.notify_all();
  for (auto& t : conn_threads_) t.join();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void StoreServer::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listener_.fd(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno == EINTR) continue;
    if (stop_) return;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = net::accept_tcp(listener_.fd());
    if (fd < 0) continue;
    std::lock_guard lk(mu_);
    conn_fds_.push_back(fd);
    conn_threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void StoreServer::serve(int fd) {
  const std::string peer = net::peer_address(fd);
  bool authenticated = false;
  std::vector<uint8_t> frame;
  try {
    while (!stop_) {
      uint32_t announced = 0;
      net::RecvStatus st = net::recv_frame(fd, frame, max_message_, net::Clock::now() + kIdle, &announced);
      if (st == net::RecvStatus::closed || st == net::RecvStatus::timeout) break;
      if (st == net::RecvStatus::oversize) {
        ++refused_;
        log::warn("store: refused a {}-byte message from {} (limit {} bytes); closing the connection", announced, peer,
                  max_message_);
        net::send_frame(fd,
                        store::encode(error_reply(fmt::format("message of {} bytes exceeds the store's limit of "
                                                              "{} bytes",
                                                              announced, max_message_))),
                        net::Clock::now() + std::chrono::seconds(5));
        break;
      }
      store::Request req;
      try {
        req = store::decode_request(frame);
      } catch (const Error& e) {
        ++refused_;
        log::warn("store: malformed message from {}: {}; closing the connection", peer, e.what());
        net::send_frame(fd, store::encode(error_reply(e.what())), net::Clock::now() + std::chrono::seconds(5));
        break;
      }
      if (!authenticated) {
        if (req.op != store::Op::hello || !same_token(req.keys[0], token_)) {
          ++refused_;
          log::warn("store: refused a connection from {}: wrong or missing job token (ZS_JOB_TOKEN)", peer);
          net::send_frame(fd, store::encode(error_reply("wrong job token: set ZS_JOB_TOKEN to this job's token")),
                          net::Clock::now() + std::chrono::seconds(5));
          break;
        }
        authenticated = true;
        net::send_frame(fd, store::encode(store::Reply{}), net::Clock::now() + std::chrono::seconds(5));
        continue;
      }
      net::send_frame(fd, store::encode(handle(req)), net::Clock::now() + std::chrono::seconds(60));
    }
  } catch (const std::exception& e) {
    log::warn("store: connection from {} ended: {}", peer, e.what());
  }
  std::lock_guard lk(mu_);
  conn_fds_.remove(fd);
  ::close(fd);
}

store::Reply StoreServer::handle(const store::Request& r) {
  std::unique_lock lk(mu_);
  auto missing = [&](const std::vector<std::string>& keys) {
    std::vector<std::string> out;
    for (const auto& k : keys)
      if (!data_.contains(k)) out.push_back(k);
    return out;
  };
  auto wait_for = [&](const std::vector<std::string>& keys) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<int64_t>(r.number, 0));
    return changed_.wait_until(lk, deadline, [&] { return stop_ || missing(keys).empty(); }) && !stop_;
  };
  switch (r.op) {
    case store::Op::hello:
      return {};
    case store::Op::set:
      data_[r.keys[0]] = r.value;
      changed_.notify_all();
      return {};
    case store::Op::get:
      if (!wait_for(r.keys))
        return error_reply(fmt::format("timed out after {} ms waiting for key '{}'", r.number, r.keys[0]));
      return {true, 0, data_[r.keys[0]]};
    case store::Op::wait:
      if (!wait_for(r.keys))
        return error_reply(
            fmt::format("timed out after {} ms waiting for keys [{}]", r.number, fmt::join(missing(r.keys), ", ")));
      return {};
    case store::Op::add: {
      auto& v = data_[r.keys[0]];
      int64_t cur = v.empty() ? 0 : std::stoll(std::string(v.begin(), v.end()));
      cur += r.number;
      std::string s = std::to_string(cur);
      v.assign(s.begin(), s.end());
      changed_.notify_all();
      return {true, cur, {}};
    }
    case store::Op::check:
      return {true, missing(r.keys).empty() ? 1 : 0, {}};
  }
  return error_reply("unknown operation");
}

}  // namespace zs
