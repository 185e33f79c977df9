// `kclip eval`: every evaluation of <kclip/eval.h> on one student, written as one JSON document.
#include "commands.h"

#include "args.h"
#include "core/model_files.h"

#include <kclip/eval.h>
#include <kclip/teacher.h>
#include <kclip/train.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>

namespace kclip::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

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

// --model: a trainer checkpoint directory (model.safetensors + its loss), a CLIP checkpoint, a config file or name.
struct Student {
  CLIP model{nullptr};
  fs::path checkpoint_dir;  // set for a trainer checkpoint
  json description;
};

Student load_student(const std::string& spec) {
  Student s;
  const fs::path path(spec);
  std::error_code ec;
  if (fs::is_regular_file(path / "trainer_state.json", ec)) {
    s.checkpoint_dir = path;
    s.model = CLIP(CLIPImpl::load(path / "model.safetensors"));
  } else if (path.extension() == ".json") {
    s.model = CLIP(CLIPConfig::from_json(path));
  } else if (fs::exists(path, ec)) {
    s.model = CLIP(CLIPImpl::load(path));
  } else {
    s.model = CLIP(CLIPConfig::named(spec));
  }
  s.description = {{"path", spec},
                   {"fingerprint", fs::exists(path, ec) ? checkpoint_fingerprint(path) : "config:" + spec},
                   {"embed_dim", s.model->config().embed_dim},
                   {"image_size", s.model->config().image_size},
                   {"context_length", s.model->config().context_length}};
  return s;
}

// Runs one evaluation, timing it and reporting it on stderr.
json timed(const char* what, bool quiet, const std::function<json()>& run) {
  if (!quiet) fmt::print(stderr, "kclip eval: {} ...\n", what);
  const auto start = std::chrono::steady_clock::now();
  json result = run();
  result["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::vector<std::string> unique_captions(const fs::path& csv, const CsvDatasetOptions& columns) {
  const CsvDataset pairs(csv, columns);
  std::vector<std::string> all = pairs.captions();
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
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
  const bool quiet = args.has("quiet");
  const int64_t batch = int_option(args, "batch-size", 256), workers = int_option(args, "workers", 0);
  const CsvDatasetOptions columns = CsvDatasetOptions()
                                        .img_key(args.get("csv-img-key", "image"))
                                        .caption_key(args.get("csv-caption-key", "caption"))
                                        .separator(csv_separator(args.get("csv-separator")));
  Student student = load_student(args.get("model"));
  CLIP& model = student.model;
  const ClipTokenizer tokenizer(args.get("tokenizer"), model->config().context_length);
  json results = {{"format", "kclip-eval"}, {"model", student.description},
                  {"settings", {{"batch_size", batch}, {"templates", args.get("templates", "openai-imagenet")}}}};

  if (args.has("zeroshot")) {
    results["zeroshot"] = timed("zero-shot classification", quiet, [&] {
      const auto templates = caption_templates(args.get("templates", "openai-imagenet"));
      const DataSource source = open_data_source(args.get("zeroshot"), DataSourceOptions().templates(templates).split("test"));
      if (!source.dataset) fail_value("--zeroshot {}: expected an image folder, fashion-mnist or mnist", args.get("zeroshot"));
      json r = json::parse(to_json(evaluate_zeroshot(model, tokenizer, source.dataset, templates, batch, workers),
                                   source.dataset->classes()));
      r["data"] = args.get("zeroshot");
      return r;
    });
  }
  if (args.has("retrieval")) {
    results["retrieval"] = timed("image-text retrieval", quiet, [&] {
      json r = json::parse(to_json(evaluate_retrieval(model, tokenizer, args.get("retrieval"), columns, batch, workers)));
      r["data"] = args.get("retrieval");
      return r;
    });
  }
  if (args.has("linear-probe")) {
    results["linear_probe"] = timed("linear probe", quiet, [&] {
      json r = json::parse(to_json(evaluate_linear_probe(model, open_probe_split(args.get("linear-probe")), {}, batch, workers)));
      r["data"] = args.get("linear-probe");
      return r;
    });
  }
  if (args.has("text-probe")) {
    const auto [train, test] = split_captions(unique_captions(args.get("text-probe"), columns), 0.2);
    const auto options = TextProbeOptions()
                             .epochs(int_option(args, "text-probe-epochs", 20))
                             .width(int_option(args, "text-probe-width", 256));
    results["text_probe"] = timed("text reconstruction probe (the student's text tower)", quiet, [&] {
      TextProbe probe(tokenizer, train, model->config().embed_dim, options);
      json r = json::parse(to_json(probe.run(clip_text_encoder(model, tokenizer), train, test)));
      r["data"] = args.get("text-probe");
      return r;
    });
    if (args.has("teacher")) {  // the paper's upper reference: the Llama teacher's pooled embeddings
      results["text_probe_teacher"] = timed("text reconstruction probe (the teacher)", quiet, [&] {
        auto teacher = LlamaTeacher::load(args.get("teacher"), args.get("teacher-tokenizer"));
        TextProbe probe(tokenizer, train, teacher->dim(), options);
        json r = json::parse(to_json(probe.run([&](const std::vector<std::string>& t) { return teacher->embed(t); },
                                               train, test)));
        r["teacher"] = teacher->id();
        return r;
      });
    }
  }
  if (args.has("concepts")) {
    results["concepts"] = timed("concept agreement", quiet, [&] {
      // The captions' teacher embeddings: --teacher-cache, else the cache the checkpoint's run trained with.
      std::string cache_dir = args.get("teacher-cache");
      if (cache_dir.empty() && !student.checkpoint_dir.empty())
        cache_dir = TrainConfig::from_json(
                        json::parse(detail::read_json_file(student.checkpoint_dir / "trainer_state.json").dump())
                            .value("config", json::object())
                            .dump())
                        .teacher_cache;
      if (cache_dir.empty()) fail_value("--concepts needs --teacher-cache DIR (the captions' teacher embeddings)");
      const std::string pairs = args.get("concept-data", args.get("retrieval", args.get("text-probe")));
      if (pairs.empty()) fail_value("--concepts needs pairs: --concept-data CSV (or --retrieval / --text-probe)");
      const EmbeddingCache cache(cache_dir);
      const KMeans concepts = KMeans::load(args.get("concepts"));
      KnowledgeClipLoss loss{nullptr};
      if (!student.checkpoint_dir.empty())
        loss = load_training_loss(student.checkpoint_dir, model->config().embed_dim, cache.dim(), concepts.centroids().size(0));
      json r = json::parse(to_json(evaluate_concepts(model, loss.is_empty() ? nullptr : loss.get(), tokenizer, pairs,
                                                     columns, cache, concepts, batch, workers)));
      r["data"] = pairs;
      return r;
    });
  }
  const std::string text = results.dump(2);
  if (args.has("out")) {
    detail::write_text_atomically(args.get("out"), text + "\n");
    if (!quiet) fmt::print(stderr, "kclip eval: wrote {}\n", args.get("out"));
  }
  fmt::print("{}\n", text);
  return 0;
}

}  // namespace kclip::cli
