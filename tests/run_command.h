// Runs a shell command and captures its stdout and stderr together: for tests that drive zsrun and the tools.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace zs::test {

struct CommandResult {
  int rc = -1;  // exit status; -1 when killed by a signal
  std::string output;
};

inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) r.output += buf;
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace zs::test
