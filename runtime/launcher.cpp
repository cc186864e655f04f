// zsrun's supervisor: fork/exec per local rank (own process group, parent-death signal), line-prefixed
// output (runtime/rank_output.h: the console, --log-dir's files, the failure report's tail), signal
// forwarding, fail-fast TERM-then-KILL, optional restarts.
#include "runtime/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <tuple>

#include "core/error.h"
#include "core/socket.h"
#include "core/store.h"
#include "runtime/rank_output.h"

extern char** environ;

namespace zs::launcher {

EnvList rank_env(const Options& o, int local_rank, int master_port, const std::string& token, int restart) {
  const int world = o.nnodes * o.nproc_per_node;
  const int rank = o.node_rank * o.nproc_per_node + local_rank;
  EnvList env{{"RANK", std::to_string(rank)},
              {"LOCAL_RANK", std::to_string(local_rank)},
              {"WORLD_SIZE", std::to_string(world)},
              {"LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node)},
              {"GROUP_RANK", std::to_string(o.node_rank)},
              {"MASTER_ADDR", o.master_addr},
              {"MASTER_PORT", std::to_string(master_port)},
              {"ZS_JOB_TOKEN", token},
              {"ZS_LAUNCHER", "zsrun"},
              {"ZS_RESTART_COUNT", std::to_string(restart)}};
  if (!o.config.empty()) env.emplace_back("ZS_CONFIG", o.config);
  return env;
}

Nproc nproc_from(const std::string& text, int gpus, int cpus) {
  if (text == "gpu" || (text == "auto" && gpus > 0)) {
    if (gpus > 0) return {gpus, ""};
    return {0, "--nproc-per-node gpu: no CUDA GPU is visible (or this build has no CUDA); give a number, or cpu"};
  }
  if (text == "cpu" || text == "auto") return {std::max(1, cpus), ""};
  int n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 1)
    return {0, fmt::format("--nproc-per-node '{}' is not a number >= 1, gpu, cpu or auto", text)};
  return {n, ""};
}

std::string validate(const Options& o) {
  if (o.command.empty()) return "no program given: zsrun [options] -- prog args...";
  if (o.nproc_per_node < 1) return "--nproc-per-node must be >= 1";
  if (o.nnodes < 1) return "--nnodes must be >= 1";
  if (o.node_rank < 0 || o.node_rank >= o.nnodes)
    return fmt::format("--node-rank {} is outside [0, {})", o.node_rank, o.nnodes);
  if (o.master_port < 0 || o.master_port > 65535) return fmt::format("--master-port {} is not a port", o.master_port);
  if (o.nnodes > 1 && o.master_port == 0) return "--master-port 0 (pick a free port) only works with --nnodes 1";
  if (o.max_restarts < 0) return "--max-restarts must be >= 0";
  if (!(o.grace_s >= 0)) return fmt::format("--grace {} must be a number of seconds >= 0", o.grace_s);
  for (const int lr : o.local_ranks_filter)
    if (lr < 0 || lr >= o.nproc_per_node)
      return fmt::format("--local-ranks-filter: local rank {} is outside [0, {}) (--nproc-per-node {})", lr,
                         o.nproc_per_node, o.nproc_per_node);
  return {};
}

namespace {

using Clock = std::chrono::steady_clock;

// Resolves the program like execvp would, so a missing program is reported before anything starts.
std::optional<std::string> find_program(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return access(prog.c_str(), X_OK) == 0 ? std::optional(prog) : std::nullopt;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= p.size();) {
    std::size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string cand = (end > start ? p.substr(start, end - start) : ".") + "/" + prog;
    if (access(cand.c_str(), X_OK) == 0) return cand;
    start = end + 1;
  }
  return std::nullopt;
}

std::string random_token() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}{:08x}{:08x}", rd(), rd(), rd(), rd());
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), sigabbrev_np(WTERMSIG(status)));
  return "stopped";
}

struct Child {
  int local_rank = 0;
  int rank = 0;
  pid_t pid = -1;
  bool alive = false;
  int status = 0;
};

// Lines of a rank's stderr that the failure report can repeat.
constexpr std::size_t kTailLines = 10;

// A failed attempt: what zsrun says of it, and the rank that most likely caused it.
struct Failure {
  std::string text;  // empty: every rank exited 0
  const Child* cause = nullptr;
};

// How long after a rank's failure zsrun waits for other failures before it stops the job (see supervise).
constexpr auto kSettle = std::chrono::milliseconds(250);

// Likely causes first: a rank killed by a signal, then one with an unusual exit status, then the
// status-1 exits that usually follow a peer's loss; ties by rank.
Failure describe_failures(std::vector<const Child*> failed) {
  auto weight = [](const Child* c) { return WIFSIGNALED(c->status) ? 0 : WEXITSTATUS(c->status) != 1 ? 1 : 2; };
  std::sort(failed.begin(), failed.end(), [&](const Child* a, const Child* b) {
    return weight(a) != weight(b) ? weight(a) < weight(b) : a->rank < b->rank;
  });
  Failure f{{}, failed.front()};
  for (const Child* c : failed) {
    if (!f.text.empty()) f.text += ", and ";
    f.text +=
        fmt::format("rank {} (local rank {}, pid {}) {}", c->rank, c->local_rank, c->pid, describe_status(c->status));
  }
  return f;
}

class Job {
 public:
  // `logs`: each local rank's stdout and stderr log files (open_logs), owned from here on; empty without
  // --log-dir.
  Job(const Options& o, int master_port, std::string token, int restart, const std::string& program, int sigfd,
      const std::vector<int>& logs)
      : o_(o), sigfd_(sigfd) {
    pipes_.reserve(2 * static_cast<std::size_t>(o.nproc_per_node));
    for (int lr = 0; lr < o.nproc_per_node; ++lr) {
      const auto i = 2 * static_cast<std::size_t>(lr);
      spawn(lr, master_port, token, restart, program, logs.empty() ? -1 : logs[i], logs.empty() ? -1 : logs[i + 1]);
    }
  }

  // Runs until every rank has exited; returns the failure (none when all exited 0).
  Failure supervise(int* interrupt_signal) {
    Failure failure;
    std::optional<Clock::time_point> kill_at, settle_at;
    std::vector<const Child*> failed;
    for (;;) {
      bool any_alive = false, any_pipe = false;
      for (auto& c : children_) any_alive |= c.alive;
      for (auto& p : pipes_) any_pipe |= p.open();
      if (!any_alive && !any_pipe) break;
      if (!any_alive) {
        // Every rank is gone; what still holds a pipe open is a stray descendant: finish it.
        kill_groups(SIGKILL);
      }
      std::vector<pollfd> fds;
      fds.push_back({sigfd_, POLLIN, 0});
      for (auto& p : pipes_)
        if (p.open()) fds.push_back({p.fd(), POLLIN, 0});
      int timeout_ms = -1;
      for (const auto& at : {kill_at, settle_at})
        if (at) {
          const int ms = static_cast<int>(
              std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(*at - Clock::now()).count()));
          timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
        }
      if (!any_alive) timeout_ms = 100;
      int rc = ::poll(fds.data(), fds.size(), timeout_ms);
      if (rc < 0 && errno != EINTR) break;
      for (auto& p : pipes_) p.drain();
      if (fds[0].revents & POLLIN) {
        signalfd_siginfo si;
        while (::read(sigfd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
          if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
            if (!*interrupt_signal) *interrupt_signal = static_cast<int>(si.ssi_signo);
            signal_all(static_cast<int>(si.ssi_signo));
            if (!kill_at) kill_at = Clock::now() + grace();
          }
        }
      }
      // Every rank that fails on its own within kSettle of the first failure is named, before the others
      // are stopped: the rank that died first and the peers that failed because of it (a broken
      // connection) can exit in either order, and describe_failures puts the likely cause first.
      reap([&](const Child& c) {
        if ((!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0) && failure.text.empty() && !*interrupt_signal)
          failed.push_back(&c);
      });
      if (!failed.empty() && failure.text.empty()) {
        if (!settle_at) settle_at = Clock::now() + kSettle;
        const bool none_left = std::none_of(children_.begin(), children_.end(), [](const Child& c) { return c.alive; });
        if (none_left || Clock::now() >= *settle_at) {
          failure = describe_failures(failed);
          settle_at.reset();
          signal_all(SIGTERM);
          kill_at = Clock::now() + grace();
        }
      }
      if (kill_at && Clock::now() >= *kill_at) {
        kill_groups(SIGKILL);
        kill_at = Clock::now() + std::chrono::seconds(3600);
      }
    }
    kill_groups(SIGKILL);  // no descendant outlives the job
    return failure;
  }

  // The last lines rank `c` wrote to stderr, to stderr, when the console does not end with them already:
  // they were filtered out, or other output came after them.
  void repeat_tail(const Child& c, int attempt) const {
    const RankOutput& err = pipes_[2 * static_cast<std::size_t>(c.local_rank) + 1];
    if (err.tail().empty() || err.last_on_screen()) return;
    const std::size_t n = err.tail().size();
    std::string out = fmt::format(
        "zsrun: the last {} rank {} wrote to stderr{}:\n", n == 1 ? "line" : fmt::format("{} lines", n), c.rank,
        o_.log_dir.empty() ? "" : fmt::format(" (all of it in {})", log_path(o_.log_dir, attempt, c.rank, true)));
    for (const std::string& line : err.tail()) out += err.prefix() + line + "\n";
    std::fputs(out.c_str(), stderr);
  }

 private:
  std::chrono::milliseconds grace() const { return std::chrono::milliseconds(static_cast<int64_t>(o_.grace_s * 1000)); }

  void spawn(int local_rank, int master_port, const std::string& token, int restart, const std::string& program,
             int out_log, int err_log) {
    EnvList env = rank_env(o_, local_rank, master_port, token, restart);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      std::string s(*e);
      bool overridden = false;
      for (auto& [k, v] : env) overridden |= s.starts_with(k + "=");
      if (!overridden) env_strings.push_back(std::move(s));
    }
    for (auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    std::vector<char*> envp, argv;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = o_.command;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    int out[2], err[2];
    ZS_CHECK_SYS(::pipe2(out, O_CLOEXEC), "pipe");
    ZS_CHECK_SYS(::pipe2(err, O_CLOEXEC), "pipe");
    const pid_t parent = ::getpid();
    pid_t pid = ZS_CHECK_SYS(::fork(), "fork");
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execve(program.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also from the parent, so the group exists before any kill
    ::close(out[1]);
    ::close(err[1]);
    const int rank = o_.node_rank * o_.nproc_per_node + local_rank;
    children_.push_back({local_rank, rank, pid, true, 0});
    const auto& shown = o_.local_ranks_filter;
    const bool console = shown.empty() || std::find(shown.begin(), shown.end(), local_rank) != shown.end();
    for (auto [fd, to, log] : {std::tuple{out[0], 1, out_log}, std::tuple{err[0], 2, err_log}}) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      pipes_.emplace_back(fd, console ? to : -1, fmt::format("[rank{}]: ", rank), log, to == 2 ? kTailLines : 0,
                          &console_lines_);
    }
  }

  template <typename F>
  void reap(F on_exit) {
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      for (auto& c : children_)
        if (c.pid == pid && c.alive) {
          c.alive = false;
          c.status = status;
          ::kill(-pid, SIGKILL);  // whatever the rank started dies with it
          on_exit(c);
        }
    }
  }

  void signal_all(int sig) {
    for (auto& c : children_)
      if (c.alive) ::kill(-c.pid, sig);
  }
  void kill_groups(int sig) {
    for (auto& c : children_) ::kill(-c.pid, sig);
  }

  const Options& o_;
  int sigfd_;
  std::vector<Child> children_;
  std::vector<RankOutput> pipes_;  // each local rank's stdout, then its stderr
  int64_t console_lines_ = 0;      // lines the ranks' streams have written to the console
};

// --log-dir: creates dir/attempt-K/rank-R and opens each local rank's stdout and stderr log (truncated),
// in that order; fills `error` and returns nothing when it cannot.
std::vector<int> open_logs(const Options& o, int attempt, std::string& error) {
  std::vector<int> fds;
  if (o.log_dir.empty()) return fds;
  for (int lr = 0; lr < o.nproc_per_node && error.empty(); ++lr) {
    const int rank = o.node_rank * o.nproc_per_node + lr;
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(log_path(o.log_dir, attempt, rank, false)).parent_path(),
                                        ec);
    for (const bool err : {false, true}) {
      const std::string path = log_path(o.log_dir, attempt, rank, err);
      const int fd = ec ? -1 : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) {
        error = fmt::format("--log-dir: cannot create '{}': {}; give a directory this user can write", path,
                            ec ? ec.message() : std::strerror(errno));
        break;
      }
      fds.push_back(fd);
    }
  }
  if (!error.empty()) {
    for (const int fd : fds) ::close(fd);
    fds.clear();
  }
  return fds;
}

}  // namespace

int run(const Options& o) {
  if (std::string err = validate(o); !err.empty()) {
    std::fprintf(stderr, "zsrun: %s\n", err.c_str());
    return 2;
  }
  std::optional<std::string> program = find_program(o.command[0]);
  if (!program) {
    std::fprintf(stderr, "zsrun: cannot run '%s': no such executable%s\n", o.command[0].c_str(),
                 o.command[0].find('/') == std::string::npos ? " in PATH" : "");
    return 2;
  }
  std::string token;
  if (const char* t = std::getenv("ZS_JOB_TOKEN"))
    token = t;
  else if (o.nnodes == 1)
    token = random_token();
  else {
    std::fprintf(stderr, "zsrun: a multi-node job needs ZS_JOB_TOKEN set to the same secret on every node\n");
    return 2;
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  int sigfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) {
    std::perror("zsrun: signalfd");
    return 1;
  }

  std::unique_ptr<StoreServer> server;
  int port = o.master_port;
  if (o.node_rank == 0) {
    try {
      // A single-node job never listens beyond loopback.
      server = std::make_unique<StoreServer>(o.nnodes == 1 ? "127.0.0.1" : "0.0.0.0", o.master_port, token);
      port = server->port();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zsrun: cannot host the rendezvous store: %s\n", e.what());
      return 1;
    }
  }
  Options job = o;
  if (o.nnodes == 1 && net::is_loopback(o.master_addr) == false) job.master_addr = "127.0.0.1";

  for (int attempt = 0;; ++attempt) {
    std::string log_error;
    const std::vector<int> logs = open_logs(job, attempt, log_error);
    if (!log_error.empty()) {
      std::fprintf(stderr, "zsrun: %s\n", log_error.c_str());
      return attempt == 0 ? 2 : 1;
    }
    if (!o.log_dir.empty())
      std::fprintf(stderr, "zsrun: each rank's output also goes to %s/attempt-%d/rank-N/{stdout,stderr}.log\n",
                   o.log_dir.c_str(), attempt);
    int interrupted = 0;
    Job j(job, port, token, attempt, *program, sigfd, logs);
    const Failure failure = j.supervise(&interrupted);
    if (interrupted) {
      std::fprintf(stderr, "zsrun: interrupted by %s; stopped every rank\n", sigabbrev_np(interrupted));
      return 128 + interrupted;
    }
    if (failure.text.empty()) return 0;
    j.repeat_tail(*failure.cause, attempt);
    if (attempt < o.max_restarts) {
      std::fprintf(stderr, "zsrun: %s; stopped the other ranks; restarting the job (restart %d of %d)\n",
                   failure.text.c_str(), attempt + 1, o.max_restarts);
      continue;
    }
    std::fprintf(stderr, "zsrun: %s; stopped the other ranks\n", failure.text.c_str());
    return 1;
  }
}

}  // namespace zs::launcher
