// POSIX TCP sockets with poll-based deadlines.
#include "core/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace zs::net {

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

namespace {

struct AddrInfo {
  addrinfo* ai = nullptr;
  ~AddrInfo() {
    if (ai) freeaddrinfo(ai);
  }
};

AddrInfo resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  AddrInfo r;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &r.ai);
  ZS_CHECK(rc == 0, "cannot resolve host '{}': {}", host, gai_strerror(rc));
  return r;
}

// Small messages (store requests and replies) go out at once instead of waiting on Nagle's algorithm for
// the peer's delayed ACK (~40 ms a round trip on Linux).
void set_no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int remaining_ms(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// Waits until fd is ready for `events`; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, remaining_ms(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) ZS_CHECK_SYS(rc, "poll");
  }
}

}  // namespace

Socket listen_tcp(const std::string& host, int port, int* bound_port) {
  AddrInfo r = resolve(host, port, true);
  Socket s(ZS_CHECK_SYS(::socket(r.ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket"));
  int one = 1;
  ZS_CHECK_SYS(setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), "setsockopt");
  if (::bind(s.fd(), r.ai->ai_addr, r.ai->ai_addrlen) != 0)
    ZS_FAIL("cannot listen on {}:{}: {}; pick another port (--master-port) or stop the process using it", host, port,
            detail::sys_error_string(errno));
  ZS_CHECK_SYS(::listen(s.fd(), 512), "listen on {}:{}", host, port);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ZS_CHECK_SYS(getsockname(s.fd(), reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
  if (bound_port)
    *bound_port = ntohs(addr.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&addr)->sin_port
                                                  : reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return s;
}

int accept_tcp(int listener_fd) {
  const int fd = ::accept4(listener_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) set_no_delay(fd);
  return fd;
}

Socket connect_tcp(const std::string& host, int port, Clock::time_point deadline) {
  std::string last_error = "timed out";
  do {
    AddrInfo r = resolve(host, port, false);
    for (addrinfo* a = r.ai; a; a = a->ai_next) {
      Socket s(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!s.valid()) continue;
      if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) == 0) {
        set_no_delay(s.fd());
        return s;
      }
      last_error = detail::sys_error_string(errno);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (Clock::now() < deadline);
  ZS_FAIL(
      "cannot connect to the rendezvous store at {}:{} ({}); check MASTER_ADDR/MASTER_PORT and that rank 0's "
      "node is up",
      host, port, last_error);
}

std::string peer_address(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return fmt::format("{}:{}", host, serv);
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1";
}

std::string local_address_towards(const std::string& host) {
  if (is_loopback(host)) return "127.0.0.1";
  AddrInfo r = resolve(host, 9, false);
  Socket s(ZS_CHECK_SYS(::socket(r.ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket"));
  ZS_CHECK_SYS(::connect(s.fd(), r.ai->ai_addr, r.ai->ai_addrlen), "routing towards {}", host);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ZS_CHECK_SYS(getsockname(s.fd(), reinterpret_cast<sockaddr*>(&addr), &len), "getsockname");
  char out[NI_MAXHOST];
  ZS_CHECK(getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, out, sizeof out, nullptr, 0, NI_NUMERICHOST) == 0,
           "cannot format the local address");
  return out;
}

namespace {

// Sends every byte of iov[0, count) (advanced in place), all of it offered to each sendmsg: a small frame
// leaves in one segment.
void send_all(int fd, iovec* iov, int count, Clock::time_point deadline) {
  for (;;) {
    while (count > 0 && iov->iov_len == 0) {
      ++iov;
      --count;
    }
    if (count == 0) return;
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = static_cast<std::size_t>(count);
    ssize_t k = ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k >= 0) {
      for (auto sent = static_cast<std::size_t>(k); sent > 0;) {
        const std::size_t step = std::min(sent, iov->iov_len);
        iov->iov_base = static_cast<char*>(iov->iov_base) + step;
        iov->iov_len -= step;
        sent -= step;
        if (iov->iov_len == 0) {
          ++iov;
          --count;
        }
      }
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ZS_CHECK(wait_fd(fd, POLLOUT, deadline), "sending to {} timed out", peer_address(fd));
      continue;
    }
    if (errno == EINTR) continue;
    ZS_FAIL("sending to {} failed: {}", peer_address(fd), detail::sys_error_string(errno));
  }
}

RecvStatus recv_all(int fd, uint8_t* p, std::size_t n, Clock::time_point deadline) {
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline)) return RecvStatus::timeout;
    ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k > 0) {
      p += k;
      n -= static_cast<std::size_t>(k);
      continue;
    }
    if (k == 0) return RecvStatus::closed;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
    if (errno == ECONNRESET) return RecvStatus::closed;
    ZS_FAIL("receiving from {} failed: {}", peer_address(fd), detail::sys_error_string(errno));
  }
  return RecvStatus::ok;
}

}  // namespace

void send_frame(int fd, const std::vector<uint8_t>& payload, Clock::time_point deadline) {
  ZS_CHECK(payload.size() <= UINT32_MAX, "a message of {} bytes is too large to send", payload.size());
  uint32_t n = static_cast<uint32_t>(payload.size());
  uint8_t hdr[4] = {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n >> 16),
                    static_cast<uint8_t>(n >> 24)};
  iovec iov[2] = {{hdr, sizeof hdr}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  send_all(fd, iov, 2, deadline);
}

RecvStatus recv_frame(int fd, std::vector<uint8_t>& payload, std::size_t max_bytes, Clock::time_point deadline,
                      uint32_t* announced) {
  uint8_t hdr[4];
  RecvStatus st = recv_all(fd, hdr, 4, deadline);
  if (st != RecvStatus::ok) return st;
  uint32_t n = hdr[0] | (hdr[1] << 8) | (hdr[2] << 16) | (static_cast<uint32_t>(hdr[3]) << 24);
  if (announced) *announced = n;
  if (n > max_bytes) return RecvStatus::oversize;
  payload.resize(n);
  return recv_all(fd, payload.data(), n, deadline);
}

}  // namespace zs::net
