#pragma once
// The whole method as one resumable run (`kclip run --config run.json`, `kclip.run(config)`):
//
//   embed    the teacher embeds every training (and evaluation) caption     RUN/teacher_cache/
//   cluster  K-means over the training captions' embeddings: the concepts    RUN/concepts.safetensors
//   train    the student with Knowledge-CLIP's loss                          RUN/train/ (checkpoints, metrics.jsonl)
//   eval     `kclip eval` on the final checkpoint                            RUN/results.json
//   export   the student in OpenAI and/or Hugging Face layout               RUN/export/
//   plots    loss curves and the evaluation summary (matplotlib)             RUN/plots/*.png
//
// Each stage records what it was made from (RUN/stages/NAME.json: a fingerprint of its inputs and settings, chained
// through the stages before it). A stage whose record matches is skipped; a changed input or setting reruns it and
// every stage after it; a stage killed midway resumes (the cache's shards, the trainer's latest checkpoint).
// RUN/run.json holds the configuration as resolved (every default written out).
#include <kclip/eval.h>
#include <kclip/train.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kclip {

// run.json. Relative paths are relative to the working directory, as on the command line.
struct RunConfig {
  std::string run_dir;  // required: where every artifact goes

  // The teacher (embed). Empty `teacher_model`: no teacher; then alpha and beta must be 0.
  std::string teacher_model, teacher_tokenizer;
  std::string teacher_pooling = "mean";
  int64_t teacher_layer = -1, teacher_max_length = 0, teacher_batch_size = 64;
  std::string teacher_dtype = "f16";  // how the cache stores embeddings: f16 | f32

  // The concepts (cluster). k = 0: no concepts; then beta must be 0.
  int64_t concepts_k = 0, concepts_iters = 50, concepts_n_init = 1;
  uint64_t concepts_seed = 0;
  double concepts_tol = 1e-4;
  std::string concepts_metric = "l2", concepts_init = "greedy-k-means++";

  // The student and its training: every `kclip train` option. The pipeline sets teacher_cache, concepts, logs
  // and name itself.
  TrainConfig train;

  // Evaluation of the final checkpoint (none named: no eval stage). `eval_concepts` adds concept agreement with
  // the run's concepts on `eval.concept_data` (default: the retrieval pairs).
  EvalSuiteOptions eval;
  bool eval_concepts = true;
  std::string eval_csv_separator;  // as written (eval.columns() holds it parsed)

  std::vector<std::string> export_layouts = {"openai"};  // "openai" (one .safetensors) and/or "hf" (a directory)
  bool plots = true;

  static RunConfig from_json(const std::string& text, const std::string& where = "run config");
  static RunConfig from_json_file(const std::filesystem::path& path);
  std::string to_json() const;  // every field, defaults included (what RUN/run.json holds)
  bool has_eval() const;
};

// What run_pipeline would do with each stage, and why.
struct StagePlan {
  std::string stage;        // embed | cluster | train | eval | export | plots
  std::string action;       // "run", "resume", "skip" (up to date), "off" (not configured)
  std::string reason;       // e.g. "no record", "settings changed", "inputs changed (embed)", "up to date"
  std::string fingerprint;  // of the inputs and settings this stage would be made from
};
std::vector<StagePlan> plan_run(const RunConfig& config);

struct RunSummary {
  std::vector<StagePlan> stages;        // as executed
  std::vector<double> seconds;          // per stage (0 when skipped)
  std::filesystem::path checkpoint;     // the final trainer checkpoint
  std::string results_json;             // RUN/results.json's text ("" without an eval stage)
};
// Runs the plan. `log` receives one line per stage event (default: stderr).
RunSummary run_pipeline(const RunConfig& config, const std::function<void(const std::string&)>& log = nullptr);

// Runs `kclip plot`'s matplotlib script (python/kclip/plot.py, carried in the library) on a metrics.jsonl or a
// results.json; returns the interpreter's exit status. Python: $KCLIP_PYTHON, else /usr/bin/python3, else python3.
int plot_with_python(const std::filesystem::path& input, const std::filesystem::path& png, const std::string& python = "");

}  // namespace kclip
