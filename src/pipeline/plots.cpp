// plot_with_python: python/kclip/plot.py, carried in the library as text, run by a Python with matplotlib.
#include <kclip/pipeline.h>
#include <kclip/error.h>

#include "kclip_plot_script.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

extern char** environ;

namespace kclip {

int plot_with_python(const std::filesystem::path& input, const std::filesystem::path& png, const std::string& python_in) {
  std::string python = python_in;
  if (python.empty() && std::getenv("KCLIP_PYTHON")) python = std::getenv("KCLIP_PYTHON");
  if (python.empty()) python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::vector<std::string> command = {python, "-c", detail::kPlotScript, input.string(), png.string()};
  std::vector<char*> raw;
  for (auto& part : command) raw.push_back(part.data());
  raw.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawnp(&pid, python.c_str(), nullptr, nullptr, raw.data(), environ) != 0)
    fail("cannot run {} (set KCLIP_PYTHON to a Python with matplotlib)", python);
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) fail("waiting for {} failed", python);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

}  // namespace kclip
