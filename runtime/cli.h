// Command-line parsing shared by the tools (zsrun, zsckpt, zsmem): CLI11, with one exit-code contract.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

namespace zs {

// Parses argv into `app`. Returns the code to exit with when the program must stop now: 0 after --help,
// 2 after a bad command line (CLI11 has printed why); nullopt to go on.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return std::nullopt;
}

}  // namespace zs
