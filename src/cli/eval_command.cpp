// `kclip eval`: flags → EvalSuiteOptions → evaluate_all (src/eval/suite.cpp), one JSON document.
#include "commands.h"

#include "args.h"
#include "core/model_files.h"

#include <kclip/eval.h>

#include <fmt/format.h>

#include <cstdio>

namespace kclip::cli {
namespace {

int64_t int_option(const Args& args, const std::string& name, int64_t fallback) {
  if (!args.has(name)) return fallback;
  try {
    size_t used = 0;
    const long long v = std::stoll(args.get(name), &used);
    if (used == args.get(name).size()) return v;
  } catch (const std::exception&) {
  }
  fail_value("--{} '{}': expected an integer", name, args.get(name));
}

}  // namespace

int run_eval(const std::vector<std::string>& argv) {
  Args args(argv,
            {"model", "zeroshot", "templates", "retrieval", "linear-probe", "text-probe", "concepts", "teacher-cache",
             "concept-data", "out", "batch-size", "workers", "csv-img-key", "csv-caption-key", "csv-separator",
             "tokenizer", "text-probe-epochs", "text-probe-width", "teacher", "teacher-tokenizer"},
            {"quiet"});
  if (!args.has("model")) fail_value("eval needs --model CKPT");
  if (!args.has("zeroshot") && !args.has("retrieval") && !args.has("linear-probe") && !args.has("text-probe") &&
      !args.has("concepts"))
    fail_value("eval needs at least one of --zeroshot, --retrieval, --linear-probe, --text-probe, --concepts");
  const auto options = EvalSuiteOptions()
                           .zeroshot(args.get("zeroshot"))
                           .templates(args.get("templates", "openai-imagenet"))
                           .retrieval(args.get("retrieval"))
                           .linear_probe(args.get("linear-probe"))
                           .text_probe(args.get("text-probe"))
                           .text_probe_epochs(int_option(args, "text-probe-epochs", 20))
                           .text_probe_width(int_option(args, "text-probe-width", 256))
                           .teacher(args.get("teacher"))
                           .teacher_tokenizer(args.get("teacher-tokenizer"))
                           .concepts(args.get("concepts"))
                           .teacher_cache(args.get("teacher-cache"))
                           .concept_data(args.get("concept-data"))
                           .columns(CsvDatasetOptions()
                                        .img_key(args.get("csv-img-key", "image"))
                                        .caption_key(args.get("csv-caption-key", "caption"))
                                        .separator(csv_separator(args.get("csv-separator"))))
                           .batch_size(int_option(args, "batch-size", 256))
                           .workers(int_option(args, "workers", 0))
                           .tokenizer(args.get("tokenizer"))
                           .quiet(args.has("quiet"));
  const std::string text = evaluate_all(args.get("model"), options);
  const bool quiet = args.has("quiet");
  if (args.has("out")) {
    detail::write_text_atomically(args.get("out"), text + "\n");
    if (!quiet) fmt::print(stderr, "kclip eval: wrote {}\n", args.get("out"));
  }
  fmt::print("{}\n", text);
  return 0;
}

}  // namespace kclip::cli
