// RankOutput: the lines of one rank's stream, to the console, the log file and the tail.
#include "runtime/rank_output.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace zs::launcher {

namespace {

constexpr std::size_t kLineCut = 1000;  // bytes of one line the tail keeps

void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t k = ::write(fd, s.data(), s.size());
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(k));
  }
}

}  // namespace

std::string log_path(const std::string& dir, int attempt, int rank, bool err) {
  return fmt::format("{}/attempt-{}/rank-{}/{}", dir, attempt, rank, err ? "stderr.log" : "stdout.log");
}

RankOutput::RankOutput(int pipe, int console, std::string prefix, int log, std::size_t keep, int64_t* console_lines)
    : pipe_(pipe),
      console_(console),
      log_(log),
      prefix_(std::move(prefix)),
      keep_(keep),
      console_lines_(console_lines) {}

RankOutput::RankOutput(RankOutput&& o) noexcept
    : pipe_(std::exchange(o.pipe_, -1)),
      console_(o.console_),
      log_(std::exchange(o.log_, -1)),
      prefix_(std::move(o.prefix_)),
      keep_(o.keep_),
      console_lines_(o.console_lines_),
      pending_(std::move(o.pending_)),
      tail_(std::move(o.tail_)),
      shown_(o.shown_),
      last_shown_(o.last_shown_) {}

RankOutput::~RankOutput() {
  if (pipe_ >= 0) ::close(pipe_);
  if (log_ >= 0) ::close(log_);
}

void RankOutput::drain() {
  char buf[65536];
  while (pipe_ >= 0) {
    const ssize_t k = ::read(pipe_, buf, sizeof buf);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EAGAIN) return;
    if (k <= 0) {
      close();
      return;
    }
    take({buf, static_cast<std::size_t>(k)});
  }
}

void RankOutput::take(std::string_view chunk) {
  if (log_ >= 0) write_all(log_, chunk);
  std::string out;
  for (std::size_t nl; (nl = chunk.find('\n')) != std::string_view::npos; chunk.remove_prefix(nl + 1)) {
    if (pending_.empty()) {
      line(chunk.substr(0, nl), out);
    } else {
      pending_.append(chunk.substr(0, nl));
      line(pending_, out);
      pending_.clear();
    }
  }
  pending_.append(chunk);
  if (!out.empty()) write_all(console_, out);
}

void RankOutput::line(std::string_view text, std::string& out) {
  if (console_ >= 0) {
    out += prefix_;
    out += text;
    out += '\n';
    shown_ = true;
    last_shown_ = ++*console_lines_;
  }
  if (keep_ == 0) return;
  if (tail_.size() == keep_) tail_.pop_front();
  tail_.emplace_back(text.substr(0, kLineCut));
}

void RankOutput::close() {
  if (!pending_.empty()) {
    std::string out, last = std::exchange(pending_, {});
    line(last, out);
    if (!out.empty()) write_all(console_, out);
  }
  if (pipe_ >= 0) ::close(pipe_);
  if (log_ >= 0) ::close(log_);
  pipe_ = log_ = -1;
}

}  // namespace zs::launcher
