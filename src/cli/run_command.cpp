// `kclip run --config run.json [--dry-run]`: the pipeline of <kclip/pipeline.h>, or its plan.
#include "commands.h"

#include "args.h"

#include <kclip/pipeline.h>

#include <fmt/format.h>

namespace kclip::cli {

std::string run_details() {
  return "run.json (relative paths from the working directory):\n"
         "  {\"run_dir\": \"runs/demo\",\n"
         "   \"teacher\":  {\"model\": \"stories15M.bin\", \"tokenizer\": \"tokenizer.bin\", \"pooling\": \"mean\", \"layer\": -1,\n"
         "                \"max_length\": 0, \"batch_size\": 64, \"dtype\": \"f16\"},\n"
         "   \"concepts\": {\"k\": 100, \"iters\": 50, \"n_init\": 1, \"seed\": 0, \"tol\": 1e-4, \"metric\": \"l2\",\n"
         "                \"init\": \"greedy-k-means++\"},\n"
         "   \"train\":    {every `kclip train` option in snake_case: \"train_data\", \"model\", \"batch_size\", \"epochs\",\n"
         "                \"alpha\", \"beta\", \"gamma\", ...},\n"
         "   \"eval\":     {\"zeroshot\": \"fashion-mnist\", \"templates\": \"openai-imagenet\", \"retrieval\": \"pairs.csv\",\n"
         "                \"linear_probe\": \"\", \"text_probe\": \"\", \"concepts\": true, \"concept_data\": \"\",\n"
         "                \"csv_img_key\": \"image\", \"csv_caption_key\": \"caption\", \"batch_size\": 256, \"workers\": 0},\n"
         "   \"export\":   [\"openai\", \"hf\"],\n"
         "   \"plots\":    true}\n"
         "Without \"teacher\" (or with concepts.k = 0) the stages that need it are off, and so must alpha (beta) be.\n"
         "The run directory: run.json (resolved), teacher_cache/, concepts.safetensors, train/ (checkpoints,\n"
         "metrics.jsonl), results.json, export/, plots/ (loss.png, eval.png), stages/NAME.json (what each stage was made\n"
         "from).\n";
}

int run_run(const std::vector<std::string>& argv) {
  Args args(argv, {"config"}, {"dry-run"});
  if (!args.has("config")) fail_value("run needs --config run.json (kclip run --help shows its keys)");
  const RunConfig config = RunConfig::from_json_file(args.get("config"));
  if (args.has("dry-run")) {
    fmt::print("kclip run: plan for {}\n", config.run_dir);
    for (const auto& s : plan_run(config))
      fmt::print("  {:<8} {:<7} {}{}\n", s.stage, s.action, s.reason, s.fingerprint.empty() ? "" : " [" + s.fingerprint + "]");
    return 0;
  }
  const RunSummary summary = run_pipeline(config);
  fmt::print("kclip run: done: {}\n", config.run_dir);
  for (size_t i = 0; i < summary.stages.size(); ++i)
    if (summary.stages[i].action != "off")
      fmt::print("  {:<8} {:<7} {:8.1f} s\n", summary.stages[i].stage, summary.stages[i].action, summary.seconds[i]);
  if (!summary.checkpoint.empty()) fmt::print("  checkpoint {}\n", summary.checkpoint.string());
  if (!summary.results_json.empty()) fmt::print("  results    {}/results.json\n", config.run_dir);
  return 0;
}

}  // namespace kclip::cli
