// The `kclip` command-line tool: `kclip <command> [options]`. Errors print one line and exit with status 2.
#include "commands.h"

#include <kclip/error.h>
#include <kclip/version.h>

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

void print_usage() {
  fmt::print("kclip {} - Knowledge-CLIP on LibTorch\n\nusage: kclip <command> [options]\n\ncommands:\n",
             kclip::version());
  for (const auto& c : kclip::cli::commands()) fmt::print("  {:<10} {}\n", c.name, c.summary);
  fmt::print("\n`kclip <command> --help` shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage();
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") args[0] = "version";
  for (const auto& command : kclip::cli::commands()) {
    if (args[0] != command.name) continue;
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (!rest.empty() && (rest[0] == "--help" || rest[0] == "-h")) {
      fmt::print("usage: kclip {} {}\n\n{}\n", command.name, command.usage, command.summary);
      if (command.details) fmt::print("\n{}", command.details());
      return 0;
    }
    try {
      return command.run(rest);
    } catch (const std::exception& e) {
      fmt::print(stderr, "kclip {}: error: {}\n", command.name, e.what());
      return 2;
    }
  }
  fmt::print(stderr, "kclip: unknown command '{}'\n\n", args[0]);
  print_usage();
  return 2;
}
