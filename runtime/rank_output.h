// RankOutput: one output stream (stdout or stderr) of one rank, as zsrun relays it. Complete lines go to
// the console with the rank's prefix ([rankN]: ) unless --local-ranks-filter leaves the rank out; every
// byte goes, as written, to the rank's log file under --log-dir; the last lines are kept for the failure
// report (the root cause's last words, which other ranks' output may have pushed off the screen).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

namespace zs::launcher {

// Where --log-dir keeps one rank's stream in one attempt (restart): dir/attempt-K/rank-R/stdout.log or
// stderr.log (torchrun's layout, by global rank so that nodes sharing a filesystem do not collide). Pure.
std::string log_path(const std::string& dir, int attempt, int rank, bool err);

class RankOutput {
 public:
  // `pipe`: the read end (non-blocking), owned from here on. `console`: the fd complete lines go to, or
  // -1 to show none. `log`: the log file's fd, owned, or -1. `keep`: how many last lines tail() holds.
  // `console_lines`: a counter of the lines written to the console by every stream of the job, shared.
  RankOutput(int pipe, int console, std::string prefix, int log, std::size_t keep, int64_t* console_lines);
  RankOutput(RankOutput&& o) noexcept;
  RankOutput& operator=(RankOutput&&) = delete;
  RankOutput(const RankOutput&) = delete;
  ~RankOutput();

  // Reads what the pipe holds now; at its end (the rank and its children closed it) closes it.
  void drain();
  // Takes one chunk of the stream, as drain does with what it reads (what tests feed).
  void take(std::string_view chunk);
  // The end of the stream: a last line without its newline is completed; the pipe and the log are closed.
  void close();
  bool open() const { return pipe_ >= 0; }
  int fd() const { return pipe_; }

  // The last complete lines (without newlines), oldest first; at most `keep`, each cut at 1000 bytes.
  const std::deque<std::string>& tail() const { return tail_; }
  // True when the console shows this stream's last line with nothing of the job's printed after it.
  bool last_on_screen() const { return shown_ && last_shown_ == *console_lines_; }
  const std::string& prefix() const { return prefix_; }

 private:
  void line(std::string_view text, std::string& out);  // one complete line (text without '\n')

  int pipe_, console_, log_;
  std::string prefix_;
  std::size_t keep_;
  int64_t* console_lines_;
  std::string pending_;  // the start of a line whose newline has not come yet
  std::deque<std::string> tail_;
  bool shown_ = false;
  int64_t last_shown_ = 0;  // console_lines_ after this stream's last line
};

}  // namespace zs::launcher
