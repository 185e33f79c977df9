// evaluate_all: every evaluation of <kclip/eval.h> on one student, as one JSON document (`kclip eval`, `kclip run`).
#include <kclip/eval.h>
#include <kclip/error.h>
#include <kclip/teacher.h>
#include <kclip/train.h>

#include "core/model_files.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>

namespace kclip {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// The student: a trainer checkpoint directory (model.safetensors + its loss), a CLIP checkpoint, a config file or name.
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

// The teacher cache a trainer checkpoint's run trained with ("" when not recorded).
std::string run_teacher_cache(const fs::path& checkpoint_dir) {
  const json state = json::parse(detail::read_json_file(checkpoint_dir / "trainer_state.json").dump());
  return TrainConfig::from_json(state.value("config", json::object()).dump()).teacher_cache;
}

}  // namespace

std::string evaluate_all(const std::string& model_spec, const EvalSuiteOptions& o) {
  if (o.zeroshot().empty() && o.retrieval().empty() && o.linear_probe().empty() && o.text_probe().empty() &&
      o.concepts().empty())
    fail_value("evaluate: name at least one of zeroshot, retrieval, linear_probe, text_probe, concepts");
  const bool quiet = o.quiet();
  const int64_t batch = o.batch_size(), workers = o.workers();
  Student student = load_student(model_spec);
  CLIP& model = student.model;
  const ClipTokenizer tokenizer(o.tokenizer(), model->config().context_length);
  json results = {{"format", "kclip-eval"}, {"model", student.description},
                  {"settings", {{"batch_size", batch}, {"templates", o.templates()}}}};

  if (!o.zeroshot().empty()) {
    results["zeroshot"] = timed("zero-shot classification", quiet, [&] {
      const auto templates = caption_templates(o.templates());
      const DataSource source = open_data_source(o.zeroshot(), DataSourceOptions().templates(templates).split("test"));
      if (!source.dataset) fail_value("zeroshot {}: expected an image folder, fashion-mnist or mnist", o.zeroshot());
      json r = json::parse(to_json(evaluate_zeroshot(model, tokenizer, source.dataset, templates, batch, workers),
                                   source.dataset->classes()));
      r["data"] = o.zeroshot();
      return r;
    });
  }
  if (!o.retrieval().empty()) {
    results["retrieval"] = timed("image-text retrieval", quiet, [&] {
      json r = json::parse(to_json(evaluate_retrieval(model, tokenizer, o.retrieval(), o.columns(), batch, workers)));
      r["data"] = o.retrieval();
      return r;
    });
  }
  if (!o.linear_probe().empty()) {
    results["linear_probe"] = timed("linear probe", quiet, [&] {
      json r = json::parse(to_json(evaluate_linear_probe(model, open_probe_split(o.linear_probe()), {}, batch, workers)));
      r["data"] = o.linear_probe();
      return r;
    });
  }
  if (!o.text_probe().empty()) {
    // Named pair members, not a structured binding: lambdas capture them (C++17, clang).
    const auto split = split_captions(unique_captions(o.text_probe(), o.columns()), 0.2);
    const auto& train = split.first;
    const auto& test = split.second;
    const auto options = TextProbeOptions().epochs(o.text_probe_epochs()).width(o.text_probe_width());
    results["text_probe"] = timed("text reconstruction probe (the student's text tower)", quiet, [&] {
      TextProbe probe(tokenizer, train, model->config().embed_dim, options);
      json r = json::parse(to_json(probe.run(clip_text_encoder(model, tokenizer), train, test)));
      r["data"] = o.text_probe();
      return r;
    });
    if (!o.teacher().empty()) {  // the paper's upper reference: the Llama teacher's pooled embeddings
      results["text_probe_teacher"] = timed("text reconstruction probe (the teacher)", quiet, [&] {
        auto teacher = LlamaTeacher::load(o.teacher(), o.teacher_tokenizer());
        TextProbe probe(tokenizer, train, teacher->dim(), options);
        json r = json::parse(to_json(probe.run([&](const std::vector<std::string>& t) { return teacher->embed(t); },
                                               train, test)));
        r["teacher"] = teacher->id();
        return r;
      });
    }
  }
  if (!o.concepts().empty()) {
    results["concepts"] = timed("concept agreement", quiet, [&] {
      std::string cache_dir = o.teacher_cache();
      if (cache_dir.empty() && !student.checkpoint_dir.empty()) cache_dir = run_teacher_cache(student.checkpoint_dir);
      if (cache_dir.empty()) fail_value("concepts needs a teacher cache (the captions' teacher embeddings)");
      std::string pairs = o.concept_data();
      if (pairs.empty()) pairs = !o.retrieval().empty() ? o.retrieval() : o.text_probe();
      if (pairs.empty()) fail_value("concepts needs pairs: concept data (or retrieval / text probe data)");
      const EmbeddingCache cache(cache_dir);
      const KMeans concepts = KMeans::load(o.concepts());
      KnowledgeClipLoss loss{nullptr};
      if (!student.checkpoint_dir.empty())
        loss = load_training_loss(student.checkpoint_dir, model->config().embed_dim, cache.dim(), concepts.centroids().size(0));
      json r = json::parse(to_json(evaluate_concepts(model, loss.is_empty() ? nullptr : loss.get(), tokenizer, pairs,
                                                     o.columns(), cache, concepts, batch, workers)));
      r["data"] = pairs;
      return r;
    });
  }
  return results.dump(2);
}

}  // namespace kclip
