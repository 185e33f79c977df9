#pragma once
// kclip's subcommands. Each takes the arguments after its name and returns the process exit code.
#include <string>
#include <vector>

namespace kclip::cli {

struct Command {
  const char* name;
  const char* usage;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<Command>& commands();

}  // namespace kclip::cli
