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
  std::string (*details)() = nullptr;  // more for --help: every option, when there are many
};

const std::vector<Command>& commands();

// train_commands.cpp
int run_train(const std::vector<std::string>& args);
std::string train_details();
int run_plot(const std::vector<std::string>& args);

// eval_command.cpp
int run_eval(const std::vector<std::string>& args);

// run_command.cpp
int run_run(const std::vector<std::string>& args);
std::string run_details();

}  // namespace kclip::cli
