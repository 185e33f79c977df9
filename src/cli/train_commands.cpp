// `kclip train` (every TrainConfig field is a flag) and `kclip plot` (metrics.jsonl to PNG with matplotlib).
#include "commands.h"

#include "args.h"
#include <kclip/pipeline.h>
#include <kclip/train.h>

#include <fmt/format.h>


#include <cstdlib>
#include <filesystem>

namespace kclip::cli {
namespace {

std::string dashed(std::string key) {
  for (char& c : key)
    if (c == '_') c = '-';
  return key;
}

}  // namespace

std::string train_details() {
  return "Options (also as a JSON file: --config FILE with the names below in snake_case; flags given here win):\n" +
         std::string("  --config FILE                  training options as JSON\n") + TrainConfig::help() +
         "\nCheckpoints go to LOGS/NAME/checkpoints/step_<N>/ (model.safetensors in OpenAI layout), metrics to "
         "LOGS/NAME/metrics.jsonl.\nData-parallel: torchrun --nproc-per-node N --no-python kclip train ...\n";
}

int run_train(const std::vector<std::string>& argv) {
  std::set<std::string> valued{"config"}, flags;
  for (const auto& key : TrainConfig::keys()) {
    if (TrainConfig::is_flag(key)) {
      flags.insert(dashed(key));
      flags.insert("no-" + dashed(key));
    } else {
      valued.insert(dashed(key));
    }
  }
  Args args(argv, valued, flags);
  if (!args.positional().empty())
    fail_value("train takes options only, got '{}' (`kclip train --help` lists them)", args.positional()[0]);
  TrainConfig config = args.has("config") ? TrainConfig::from_json_file(args.get("config")) : TrainConfig();
  for (const auto& key : TrainConfig::keys()) {
    const std::string flag = dashed(key);
    if (!TrainConfig::is_flag(key)) {
      if (args.has(flag)) config.set(key, args.get(flag));
    } else if (args.has(flag) && args.has("no-" + flag)) {
      fail_value("--{} and --no-{} contradict each other", flag, flag);
    } else if (args.has(flag) || args.has("no-" + flag)) {
      config.set_json(key, args.has(flag) ? "true" : "false");
    }
  }
  Trainer trainer(config);
  trainer.fit();
  return 0;
}

// The Python that runs the plot script: --python, $KCLIP_PYTHON, Debian's /usr/bin/python3, or python3 on the PATH.
int run_plot(const std::vector<std::string>& argv) {
  Args args(argv, {"python"}, {});
  if (args.positional().size() != 2) fail_value("plot expects METRICS.jsonl (or results.json) and OUT.png");
  return plot_with_python(args.positional()[0], args.positional()[1], args.get("python"));
}

}  // namespace kclip::cli
