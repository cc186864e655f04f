// Command-line parsing shared by the tools (zsrun, zsckpt, zsmem) and programs: CLI11, with one exit-code
// contract, and the validators of options that name config choices.
#pragma once

#include <CLI/CLI.hpp>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "runtime/config.h"

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

// Number validators that say what was wrong in words ("--world: '0' is not a positive number"), where CLI11's
// PositiveNumber and NonNegativeNumber print a range ending in the largest double.
inline CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        return CLI::detail::lexical_cast(text, v) && v > 0 ? "" : "'" + text + "' is not a positive number";
      },
      "POSITIVE");
}

inline CLI::Validator non_negative() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        return CLI::detail::lexical_cast(text, v) && v >= 0 ? "" : "'" + text + "' is not a number >= 0";
      },
      "NONNEGATIVE");
}

// The validator of an --offload-ratio option: Config::Offload::ratio_valid.
inline CLI::Validator offload_ratio() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double v = 0;
        return CLI::detail::lexical_cast(text, v) && Config::Offload::ratio_valid(v)
                   ? ""
                   : "'" + text + "' is not in (0, 1]: the share of the parameters whose optimizer runs on the host";
      },
      "RATIO");
}

// The validator of an --offload option: Config::Offload::kChoices.
inline CLI::IsMember offload_choices() {
  return CLI::IsMember(
      std::vector<std::string>(std::begin(Config::Offload::kChoices), std::end(Config::Offload::kChoices)));
}

}  // namespace zs
