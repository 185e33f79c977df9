#pragma once
// A minimal argument parser for kclip's subcommands: positionals, `--name value`, `--name=value` and flags.
// Unknown options and missing values are ValueErrors naming the option, so a typo never passes silently.
#include <kclip/error.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace kclip::cli {

class Args {
 public:
  // `valued` lists options that take a value, `flags` those that do not.
  Args(const std::vector<std::string>& argv, const std::set<std::string>& valued, const std::set<std::string>& flags) {
    for (std::size_t i = 0; i < argv.size(); ++i) {
      const std::string& a = argv[i];
      if (a.rfind("--", 0) != 0 || a == "--") {
        positional_.push_back(a);
        continue;
      }
      std::string name = a.substr(2), value;
      bool has_value = false;
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (flags.count(name)) {
        if (has_value) fail_value("option --{} takes no value", name);
        options_[name] = "1";
      } else if (valued.count(name)) {
        if (!has_value) {
          if (i + 1 >= argv.size()) fail_value("option --{} expects a value", name);
          value = argv[++i];
        }
        options_[name] = value;
      } else {
        fail_value("unknown option --{}", name);
      }
    }
  }

  const std::vector<std::string>& positional() const { return positional_; }
  bool has(const std::string& name) const { return options_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = options_.find(name);
    return it == options_.end() ? fallback : it->second;
  }

 private:
  std::vector<std::string> positional_;
  std::map<std::string, std::string> options_;
};

}  // namespace kclip::cli
