// run.json <-> RunConfig: sections "teacher", "concepts", "train" (every `kclip train` option), "eval", "export",
// "plots". Unknown keys and wrongly typed values are one ValueError naming the section and key.
#include <kclip/pipeline.h>
#include <kclip/error.h>

#include "core/model_files.h"
#include "data/csv.h"  // read_text_file

#include <nlohmann/json.hpp>

#include <set>

namespace kclip {
namespace {

using json = nlohmann::ordered_json;

// Reads the keys of one section into fields, refusing keys it does not know.
class Section {
 public:
  Section(const json& root, std::string name, std::string where) : name_(std::move(name)), where_(std::move(where)) {
    if (!root.contains(name_)) return;
    node_ = root.at(name_);
    if (!node_.is_object()) fail_value("{}: \"{}\" must be a JSON object", where_, name_);
  }
  template <typename T>
  Section& get(const char* key, T& field) {
    known_.insert(key);
    if (!node_.contains(key) || node_.at(key).is_null()) return *this;
    try {
      field = node_.at(key).get<T>();
    } catch (const json::exception&) {
      fail_value("{}: {}.{} is {}: expected {}", where_, name_, key, node_.at(key).dump(), expected<T>());
    }
    return *this;
  }
  void finish() const {
    for (const auto& [key, value] : node_.items())
      if (!known_.count(key)) fail_value("{}: unknown key {}.{} (known: {})", where_, name_, key, fmt::join(known_, ", "));
  }

 private:
  template <typename T>
  static const char* expected() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else if constexpr (std::is_same_v<T, std::string>) return "a string";
    else return "a list of strings";
  }
  std::string name_, where_;
  json node_ = json::object();
  std::set<std::string> known_;
};

}  // namespace

RunConfig RunConfig::from_json(const std::string& text, const std::string& where) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail_value("{}: not JSON: {}", where, e.what());
  }
  if (!root.is_object()) fail_value("{}: expected a JSON object", where);
  static const std::set<std::string> sections = {"run_dir", "teacher", "concepts", "train", "eval", "export", "plots"};
  for (const auto& [key, value] : root.items())
    if (!sections.count(key))
      fail_value("{}: unknown key \"{}\" (expected run_dir, teacher, concepts, train, eval, export, plots)", where, key);

  RunConfig c;
  if (!root.contains("run_dir") || !root["run_dir"].is_string() || root["run_dir"].get<std::string>().empty())
    fail_value("{}: \"run_dir\" (a directory for the run's artifacts) is required", where);
  c.run_dir = root["run_dir"].get<std::string>();
  if (root.contains("plots")) {
    if (!root["plots"].is_boolean()) fail_value("{}: \"plots\" must be true or false", where);
    c.plots = root["plots"].get<bool>();
  }
  if (root.contains("export")) {
    const json& e = root["export"];
    if (!e.is_array()) fail_value("{}: \"export\" must be a list of layouts (\"openai\", \"hf\")", where);
    c.export_layouts.clear();
    for (const auto& layout : e) {
      if (!layout.is_string() || (layout != "openai" && layout != "hf"))
        fail_value("{}: export layout {}: expected \"openai\" or \"hf\"", where, layout.dump());
      c.export_layouts.push_back(layout.get<std::string>());
    }
  }

  Section(root, "teacher", where)
      .get("model", c.teacher_model)
      .get("tokenizer", c.teacher_tokenizer)
      .get("pooling", c.teacher_pooling)
      .get("layer", c.teacher_layer)
      .get("max_length", c.teacher_max_length)
      .get("batch_size", c.teacher_batch_size)
      .get("dtype", c.teacher_dtype)
      .finish();
  if (c.teacher_dtype != "f16" && c.teacher_dtype != "f32")
    fail_value("{}: teacher.dtype '{}': expected f16 or f32", where, c.teacher_dtype);

  Section(root, "concepts", where)
      .get("k", c.concepts_k)
      .get("iters", c.concepts_iters)
      .get("n_init", c.concepts_n_init)
      .get("seed", c.concepts_seed)
      .get("tol", c.concepts_tol)
      .get("metric", c.concepts_metric)
      .get("init", c.concepts_init)
      .finish();

  if (root.contains("train")) {
    if (!root["train"].is_object()) fail_value("{}: \"train\" must be a JSON object", where);
    c.train = TrainConfig::from_json(root["train"].dump(), where + ": train");
  }

  std::string zeroshot, templates = "openai-imagenet", retrieval, linear_probe, text_probe, concept_data;
  std::string img_key = "image", caption_key = "caption", separator, tokenizer;
  int64_t text_probe_epochs = 20, text_probe_width = 256, batch_size = 256, workers = 0;
  Section(root, "eval", where)
      .get("zeroshot", zeroshot)
      .get("templates", templates)
      .get("retrieval", retrieval)
      .get("linear_probe", linear_probe)
      .get("text_probe", text_probe)
      .get("text_probe_epochs", text_probe_epochs)
      .get("text_probe_width", text_probe_width)
      .get("concepts", c.eval_concepts)
      .get("concept_data", concept_data)
      .get("csv_img_key", img_key)
      .get("csv_caption_key", caption_key)
      .get("csv_separator", separator)
      .get("batch_size", batch_size)
      .get("workers", workers)
      .get("tokenizer", tokenizer)
      .finish();
  c.eval.zeroshot(zeroshot).templates(templates).retrieval(retrieval).linear_probe(linear_probe).text_probe(text_probe)
      .text_probe_epochs(text_probe_epochs).text_probe_width(text_probe_width).concept_data(concept_data)
      .columns(CsvDatasetOptions().img_key(img_key).caption_key(caption_key).separator(csv_separator(separator)))
      .batch_size(batch_size).workers(workers).tokenizer(tokenizer);
  c.eval_csv_separator = separator;

  // What the loss needs must be configured.
  if (c.teacher_model.empty() && (c.train.alpha > 0 || c.train.beta > 0))
    fail_value("{}: train.alpha = {} and train.beta = {} need a teacher: set teacher.model (or both to 0)", where,
               c.train.alpha, c.train.beta);
  if (c.concepts_k <= 0 && c.train.beta > 0)
    fail_value("{}: train.beta = {} needs concepts: set concepts.k (or beta to 0)", where, c.train.beta);
  if (c.train.train_data.empty()) fail_value("{}: train.train_data is required", where);
  return c;
}

RunConfig RunConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(detail::read_text_file(path), path.string());
}

bool RunConfig::has_eval() const {
  return !eval.zeroshot().empty() || !eval.retrieval().empty() || !eval.linear_probe().empty() ||
         !eval.text_probe().empty();
}

std::string RunConfig::to_json() const {
  json root = {{"run_dir", run_dir}};
  root["teacher"] = {{"model", teacher_model},         {"tokenizer", teacher_tokenizer},
                     {"pooling", teacher_pooling},     {"layer", teacher_layer},
                     {"max_length", teacher_max_length}, {"batch_size", teacher_batch_size},
                     {"dtype", teacher_dtype}};
  root["concepts"] = {{"k", concepts_k},       {"iters", concepts_iters}, {"n_init", concepts_n_init},
                      {"seed", concepts_seed}, {"tol", concepts_tol},     {"metric", concepts_metric},
                      {"init", concepts_init}};
  root["train"] = json::parse(train.to_json());
  root["eval"] = {{"zeroshot", eval.zeroshot()},
                  {"templates", eval.templates()},
                  {"retrieval", eval.retrieval()},
                  {"linear_probe", eval.linear_probe()},
                  {"text_probe", eval.text_probe()},
                  {"text_probe_epochs", eval.text_probe_epochs()},
                  {"text_probe_width", eval.text_probe_width()},
                  {"concepts", eval_concepts},
                  {"concept_data", eval.concept_data()},
                  {"csv_img_key", eval.columns().img_key()},
                  {"csv_caption_key", eval.columns().caption_key()},
                  {"csv_separator", eval_csv_separator},
                  {"batch_size", eval.batch_size()},
                  {"workers", eval.workers()},
                  {"tokenizer", eval.tokenizer()}};
  root["export"] = export_layouts;
  root["plots"] = plots;
  return root.dump(2);
}

}  // namespace kclip
