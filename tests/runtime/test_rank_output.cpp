// RankOutput: zsrun's relay of one rank's stream to the console, its log file and the failure report's tail.
#include "runtime/rank_output.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace zs::launcher {
namespace {

// A pipe whose read end the test reads back what a RankOutput wrote to the write end.
struct Capture {
  int fds[2] = {-1, -1};
  Capture() { EXPECT_EQ(::pipe2(fds, O_NONBLOCK), 0); }
  ~Capture() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  int in() const { return fds[1]; }
  // Transfers ownership of the write end (a RankOutput closes its log).
  int give() { return std::exchange(fds[1], -1); }
  std::string read_all() const {
    std::string s;
    char buf[4096];
    for (ssize_t k; (k = ::read(fds[0], buf, sizeof buf)) > 0;) s.append(buf, static_cast<std::size_t>(k));
    return s;
  }
};

TEST(RankOutput, LogPathIsByAttemptAndGlobalRank) {
  EXPECT_EQ(log_path("logs", 0, 5, false), "logs/attempt-0/rank-5/stdout.log");
  EXPECT_EQ(log_path("/x/y", 2, 13, true), "/x/y/attempt-2/rank-13/stderr.log");
}

// Chunks split lines anywhere; the console gets whole prefixed lines, the log the bytes as written, the
// tail the last `keep` lines (cut at 1000 bytes), and a last line without its newline counts at the end.
TEST(RankOutput, LinesReachTheConsoleWholeTheLogAsWrittenAndTheTailLast) {
  Capture console, log;
  int64_t lines = 0;
  {
    RankOutput out(-1, console.in(), "[rank3]: ", log.give(), 2, &lines);
    for (const char* chunk : {"al", "pha\nbe", "ta\n", "", "gam", "ma\ndelta\n", "eps"}) out.take(chunk);
    EXPECT_EQ(console.read_all(), "[rank3]: alpha\n[rank3]: beta\n[rank3]: gamma\n[rank3]: delta\n");
    ASSERT_EQ(out.tail().size(), 2u);
    EXPECT_EQ(out.tail()[0], "gamma");
    EXPECT_EQ(out.tail()[1], "delta");
    EXPECT_EQ(lines, 4);
    out.take(std::string(1500, 'x') + "\n");
    EXPECT_EQ(out.tail()[1], "eps" + std::string(997, 'x'));
    out.take("no newline");
    out.close();
    EXPECT_EQ(out.tail().back(), "no newline");
    EXPECT_EQ(console.read_all(), "[rank3]: eps" + std::string(1500, 'x') + "\n[rank3]: no newline\n");
  }
  EXPECT_EQ(log.read_all(), "alpha\nbeta\ngamma\ndelta\neps" + std::string(1500, 'x') + "\nno newline");
}

// The failure report repeats a rank's last lines only when the console does not end with them: when the
// rank is filtered out, or another stream printed after it.
TEST(RankOutput, LastOnScreenUntilAnotherStreamPrints) {
  Capture console;
  int64_t lines = 0;
  RankOutput a(-1, console.in(), "[rank0]: ", -1, 4, &lines), b(-1, console.in(), "[rank1]: ", -1, 4, &lines),
      hidden(-1, -1, "[rank2]: ", -1, 4, &lines);
  EXPECT_FALSE(a.last_on_screen());  // nothing shown yet
  a.take("cause\n");
  EXPECT_TRUE(a.last_on_screen());
  b.take("half a line");
  EXPECT_TRUE(a.last_on_screen());
  b.take(" of collateral\n");
  EXPECT_FALSE(a.last_on_screen());
  EXPECT_TRUE(b.last_on_screen());
  hidden.take("filtered\n");
  EXPECT_FALSE(hidden.last_on_screen());
  EXPECT_TRUE(b.last_on_screen());  // a filtered stream prints nothing
  ASSERT_EQ(hidden.tail().size(), 1u);
  EXPECT_EQ(hidden.tail()[0], "filtered");
  EXPECT_EQ(console.read_all(), "[rank0]: cause\n[rank1]: half a line of collateral\n");
}

// drain() reads a real pipe to its end and closes it.
TEST(RankOutput, DrainReadsThePipeToItsEnd) {
  Capture source, console;
  int64_t lines = 0;
  RankOutput out(dup(source.fds[0]), console.in(), "[rank0]: ", -1, 1, &lines);
  ASSERT_EQ(::write(source.in(), "one\ntw", 6), 6);
  out.drain();
  EXPECT_TRUE(out.open());
  ::close(source.give());
  out.drain();
  EXPECT_FALSE(out.open());
  EXPECT_EQ(console.read_all(), "[rank0]: one\n[rank0]: tw\n");
  EXPECT_EQ(out.tail().back(), "tw");
}

}  // namespace
}  // namespace zs::launcher
