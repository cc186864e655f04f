// Command-line parsing shared by the tools (zsrun, zsckpt, zsmem) and programs: CLI11, with one exit-code
// contract, and the validators of options that name config choices.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/byte_size.h"
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

// A validator of one number that says what was wrong in words ("--world: '0' is not a positive number"), where
// CLI11's PositiveNumber and NonNegativeNumber print a range ending in the largest double: `ok` decides, and
// `what` ends the message "'<text>' is not ...".
template <typename Ok>
CLI::Validator number_check(Ok ok, std::string what, std::string name) {
  return CLI::Validator(
      [ok, what](std::string& text) -> std::string {
        double v = 0;
        return CLI::detail::lexical_cast(text, v) && ok(v) ? "" : "'" + text + "' is not " + what;
      },
      std::move(name));
}

inline CLI::Validator positive() {
  return number_check([](double v) { return v > 0; }, "a positive number", "POSITIVE");
}

inline CLI::Validator non_negative() {
  return number_check([](double v) { return v >= 0; }, "a number >= 0", "NONNEGATIVE");
}

// The validator of an --offload-ratio option: Config::Offload::ratio_valid.
inline CLI::Validator offload_ratio() {
  return number_check([](double v) { return Config::Offload::ratio_valid(v); },
                      "in (0, 1]: the share of the parameters whose optimizer runs on the host", "RATIO");
}

// The validator of a file the program writes at the end (an export, a picture): its directory must exist
// now, so a typo fails before the work instead of losing it.
inline CLI::Validator output_file() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::filesystem::path dir = std::filesystem::path(text).parent_path();
        std::error_code ec;
        return dir.empty() || std::filesystem::is_directory(dir, ec)
                   ? ""
                   : "'" + text + "': directory '" + dir.string() + "' does not exist (create it first)";
      },
      "FILE");
}

// The validator of a size option (core/byte_size.h): a number and a unit, or a bare number of `bare_unit`
// bytes (named `bare_name` in the message: "GiB", "bytes").
inline CLI::Validator byte_size(double bare_unit, std::string bare_name) {
  return CLI::Validator(
      [bare_unit, bare_name](std::string& text) -> std::string {
        return parse_byte_size(text, bare_unit) ? ""
                                                : "'" + text + "' is not a size: give a number of " + bare_name +
                                                      " or a number and a unit (80GiB, 5GB, 512MiB)";
      },
      "SIZE");
}

// The validator of an --offload option: Config::Offload::kChoices.
inline CLI::IsMember offload_choices() {
  return CLI::IsMember(
      std::vector<std::string>(std::begin(Config::Offload::kChoices), std::end(Config::Offload::kChoices)));
}

}  // namespace zs
