// TCP socket helpers with deadlines: listen, connect with retry, framed send/receive with a size bound.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace zs::net {

using Clock = std::chrono::steady_clock;

// An owned file descriptor.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket();
  Socket(Socket&& o) noexcept : fd_(o.release()) {}
  Socket& operator=(Socket&& o) noexcept;
  int fd() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Binds and listens on host:port (port 0 picks a free one). Returns the socket and the bound port.
Socket listen_tcp(const std::string& host, int port, int* bound_port);
// Accepts a connection on a listening socket, with TCP_NODELAY set as on connected ones; -1 on failure.
int accept_tcp(int listener_fd);
// Connects, retrying refused connections until `deadline` (the server may not be up yet).
Socket connect_tcp(const std::string& host, int port, Clock::time_point deadline);
// The peer's address as text, for logs.
std::string peer_address(int fd);
// The local IP address this host uses to reach `host` (for advertising to peers on other nodes).
std::string local_address_towards(const std::string& host);
bool is_loopback(const std::string& host);

// A frame is a 4-byte little-endian length followed by that many bytes.
enum class RecvStatus { ok, closed, timeout, oversize };
void send_frame(int fd, const std::vector<uint8_t>& payload, Clock::time_point deadline);
RecvStatus recv_frame(int fd, std::vector<uint8_t>& payload, std::size_t max_bytes, Clock::time_point deadline,
                      uint32_t* announced = nullptr);

}  // namespace zs::net
