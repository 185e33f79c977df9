// TrainConfig: one table of fields drives JSON files, CLI flags, `kclip train --help` and the Python attributes.
#include <kclip/error.h>
#include <kclip/train.h>

#include "core/model_files.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <type_traits>

namespace kclip {
namespace {

using json = nlohmann::ordered_json;

struct Field {
  const char* name;
  const char* meta;  // what the flag takes, for the help text ("" for a bool)
  const char* help;
  std::function<json(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const json&, const std::string&)> set;
  bool flag;
};

template <typename T>
T convert(const json& v, const std::string& where, const char* name) {
  auto wrong = [&](const char* expected) -> T {
    fail_value("{}: '{}' is {}: expected {}", where, name, v.dump(), expected);
  };
  if constexpr (std::is_same_v<T, bool>) {
    return v.is_boolean() ? v.get<bool>() : wrong("true or false");
  } else if constexpr (std::is_same_v<T, std::string>) {
    return v.is_string() ? v.get<std::string>() : wrong("a string");
  } else if constexpr (std::is_same_v<T, uint64_t>) {
    return v.is_number_integer() && v.get<int64_t>() >= 0 ? v.get<uint64_t>() : wrong("a non-negative integer");
  } else if constexpr (std::is_integral_v<T>) {
    return v.is_number_integer() ? v.get<T>() : wrong("an integer");
  } else {
    return v.is_number() && std::isfinite(v.get<double>()) ? v.get<double>() : wrong("a finite number");
  }
}

template <typename T>
Field field(const char* name, const char* meta, const char* help, T TrainConfig::*member) {
  return Field{name, meta, help, [member](const TrainConfig& c) { return json(c.*member); },
               [member, name](TrainConfig& c, const json& v, const std::string& where) {
                 c.*member = convert<T>(v, where, name);
               },
               std::is_same_v<T, bool>};
}

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> all = {
      field("train_data", "DATA", "training pairs: a .csv/.tsv file, tar shards (dir/{00000..00009}.tar), an image folder, "
            "fashion-mnist or mnist", &C::train_data),
      field("dataset_type", "TYPE", "auto | csv | webdataset | imagefolder | idx", &C::dataset_type),
      field("csv_img_key", "COLUMN", "CSV column of image paths (relative to the CSV file)", &C::csv_img_key),
      field("csv_caption_key", "COLUMN", "CSV column of captions", &C::csv_caption_key),
      field("csv_separator", "CHAR", "CSV separator (default: ',' for .csv, tab otherwise; '\\t' for tab)", &C::csv_separator),
      field("templates", "NAME|FILE", "captions of class-labelled data: simple | openai-cifar10 | openai-imagenet | a file "
            "with one template per line ({} = class name)", &C::templates),
      field("bad_samples", "POLICY", "unreadable images and malformed CSV records: skip (counted) | error", &C::bad_samples),
      field("workers", "N", "image decoding threads (0: every CPU this process may use)", &C::workers),
      field("no_aug", "", "no RandomResizedCrop: resize + center crop as in evaluation", &C::no_aug),
      field("aug_scale", "LO,HI", "RandomResizedCrop's range of crop areas", &C::aug_scale),
      field("model", "MODEL", "a config name (tiny, bench-s, ViT-B-32, ...), a CONFIG.json, or a checkpoint to fine-tune "
            "(OpenAI .safetensors or Hugging Face directory)", &C::model),
      field("tokenizer", "PATH", "CLIP BPE vocabulary (default: kclip's cache, filled by `make`)", &C::tokenizer),
      field("lock_image", "", "freeze the image tower", &C::lock_image),
      field("lock_text", "", "freeze the text tower", &C::lock_text),
      field("grad_checkpointing", "", "recompute transformer blocks in backward (less memory)", &C::grad_checkpointing),
      field("teacher_cache", "DIR", "teacher caption embeddings from `kclip embed` (for alpha > 0 or beta > 0)",
            &C::teacher_cache),
      field("concepts", "FILE", "K-means centroids from `kclip cluster` over that cache (for beta > 0)", &C::concepts),
      field("concept_temperature", "T", "soft concept labels: softmax(-d^2/T) (l2) or softmax(cos/T); 0: one-hot",
            &C::concept_temperature),
      field("concept_top_k", "K", "keep each soft label's K largest probabilities (0: all)", &C::concept_top_k),
      field("alpha", "A", "weight of the text-embedding distillation term", &C::alpha),
      field("beta", "B", "weight of the concept term", &C::beta),
      field("gamma", "G", "weight of the contrastive term", &C::gamma),
      field("distill_head", "HEAD", "W_e: linear (the paper) | mlp (the authors' code)", &C::distill_head),
      field("distill_hidden", "N", "hidden units of the mlp head", &C::distill_hidden),
      field("distill_kind", "KIND", "distillation distance: mse | cosine", &C::distill_kind),
      field("standardize_targets", "", "distil standardised teacher embeddings (per-dimension mean and std of the cache)",
            &C::standardize_targets),
      field("concept_mode", "MODE", "concept heads: per_modality | concat (the authors' code)", &C::concept_mode),
      field("concept_hidden", "N", "hidden units of each concept head", &C::concept_hidden),
      field("teacher_dim", "D", "teacher dimension when training without a cache (custom loops)", &C::teacher_dim),
      field("num_concepts", "K", "number of concepts when training without a concepts file (custom loops)",
            &C::num_concepts),
      field("batch_size", "B", "batch size per rank", &C::batch_size),
      field("epochs", "N", "epochs to train", &C::epochs),
      field("max_steps", "N", "stop after N optimizer steps (0: no limit)", &C::max_steps),
      field("accum_freq", "N", "accumulate N batches per step; the contrastive loss spans all N (open_clip)",
            &C::accum_freq),
      field("lr", "LR", "peak learning rate", &C::lr),
      field("wd", "WD", "AdamW weight decay (not on gains, biases, embeddings, logit_scale)", &C::wd),
      field("beta1", "B1", "AdamW beta1", &C::beta1),
      field("beta2", "B2", "AdamW beta2", &C::beta2),
      field("eps", "EPS", "AdamW epsilon", &C::eps),
      field("warmup", "N", "linear warm-up steps", &C::warmup),
      field("lr_scheduler", "NAME", "cosine | const", &C::lr_scheduler),
      field("grad_clip_norm", "X", "clip the global gradient norm to X (0: off)", &C::grad_clip_norm),
      field("precision", "P", "fp32 | amp_bf16 (bfloat16 autocast)", &C::precision),
      field("device", "DEV", "cpu, cuda or cuda:N (default: cuda:LOCAL_RANK when CUDA is available, else cpu)",
            &C::device),
      field("seed", "S", "seed of the initial weights, the data order and the augmentation", &C::seed),
      field("nonfinite", "POLICY", "a NaN/Inf loss term or gradient: error (stop) | skip (the step, counted)",
            &C::nonfinite),
      field("logs", "DIR", "where runs are written", &C::logs),
      field("name", "NAME", "the run's directory under --logs (default: a timestamp and the model)", &C::name),
      field("save_frequency", "N", "checkpoint every N epochs (0: only at the end)", &C::save_frequency),
      field("save_every_n_steps", "N", "also checkpoint every N steps (0: off)", &C::save_every_n_steps),
      field("keep", "N", "checkpoints to keep; older ones are deleted (0: keep all)", &C::keep),
      field("resume", "latest|DIR", "continue from the run's newest checkpoint (latest) or a checkpoint directory",
            &C::resume),
      field("log_every_n_steps", "N", "progress lines when stderr is not a terminal", &C::log_every_n_steps),
      field("progress", "", "show progress on stderr", &C::progress),
      field("dist_timeout", "SECONDS", "how long a collective waits for another rank before failing", &C::dist_timeout),
      field("eval_every_n_steps", "N", "evaluate every N steps and at the end (0: never; needs --val-zeroshot or "
            "--val-retrieval); results go to metrics.jsonl", &C::eval_every_n_steps),
      field("val_zeroshot", "DATA", "zero-shot evaluation data: an image folder, fashion-mnist or mnist", &C::val_zeroshot),
      field("val_templates", "NAME|FILE", "prompt templates of the zero-shot evaluation", &C::val_templates),
      field("val_retrieval", "CSV", "retrieval evaluation pairs (columns as --csv-img-key, --csv-caption-key)",
            &C::val_retrieval),
  };
  return all;
}

std::string normalize(std::string key) {
  for (char& c : key)
    if (c == '-') c = '_';
  return key;
}

const Field& find(const std::string& key) {
  const std::string name = normalize(key);
  for (const auto& f : fields())
    if (name == f.name) return f;
  fail_value("unknown training option '{}' (`kclip train --help` lists them)", key);
}

void check_choice(const char* name, const std::string& value, std::initializer_list<const char*> choices) {
  for (const char* c : choices)
    if (value == c) return;
  std::vector<std::string> list(choices.begin(), choices.end());
  fail_value("TrainConfig: {} '{}': expected {}", name, value, fmt::join(list, " | "));
}

}  // namespace

TrainConfig TrainConfig::from_json(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // syntax, and numbers out of range (1e309)
    fail("{}: not valid JSON: {}", where, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object of training options", where);
  TrainConfig c;
  for (const auto& [key, value] : j.items()) find(key).set(c, value, where);
  return c;
}

TrainConfig TrainConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(detail::read_json_file(path).dump(), path.string());
}

std::string TrainConfig::to_json() const {
  json j = json::object();
  for (const auto& f : fields()) j[f.name] = f.get(*this);
  return j.dump(2);
}

void TrainConfig::set_json(const std::string& key, const std::string& json_value) {
  json v;
  try {
    v = json::parse(json_value);
  } catch (const json::exception&) {
    fail_value("option {}: '{}' is not a valid value", key, json_value);
  }
  find(key).set(*this, v, "option");
}

void TrainConfig::set(const std::string& key, const std::string& value) {
  const Field& f = find(key);
  if (f.get(*this).is_string()) {
    f.set(*this, json(value), "option");
    return;
  }
  std::string flag = "--" + std::string(f.name);
  for (char& c : flag)
    if (c == '_') c = '-';
  json v;
  try {
    v = json::parse(value);
  } catch (const json::exception&) {
    fail_value("{} '{}': expected {}", flag, value, f.flag ? "true or false" : "a number");
  }
  f.set(*this, v, flag);
}

std::string TrainConfig::get(const std::string& key) const { return find(key).get(*this).dump(); }

std::vector<std::string> TrainConfig::keys() {
  std::vector<std::string> names;
  for (const auto& f : fields()) names.emplace_back(f.name);
  return names;
}

bool TrainConfig::is_flag(const std::string& key) { return find(key).flag; }

std::string TrainConfig::help() {
  const TrainConfig defaults;
  std::string out;
  for (const auto& f : fields()) {
    std::string flag = "--" + std::string(f.name);
    for (char& c : flag)
      if (c == '_') c = '-';
    const json value = f.get(defaults);
    std::string shown = value.is_string() ? value.get<std::string>() : value.dump();
    if (f.flag && value.get<bool>()) flag = "--[no-]" + flag.substr(2);
    const std::string left = f.flag ? flag : flag + " " + f.meta;
    out += fmt::format("  {:<30} {}{}\n", left, f.help,
                       f.flag ? (value.get<bool>() ? " (on by default)" : "")
                              : (shown.empty() ? "" : fmt::format(" [default: {}]", shown)));
  }
  return out;
}

void TrainConfig::validate() const {
  check_choice("dataset_type", dataset_type, {"auto", "csv", "webdataset", "imagefolder", "idx"});
  check_choice("bad_samples", bad_samples, {"skip", "error"});
  check_choice("distill_head", distill_head, {"linear", "mlp"});
  check_choice("distill_kind", distill_kind, {"mse", "cosine"});
  check_choice("concept_mode", concept_mode, {"per_modality", "concat"});
  check_choice("lr_scheduler", lr_scheduler, {"cosine", "const"});
  check_choice("precision", precision, {"fp32", "amp_bf16"});
  check_choice("nonfinite", nonfinite, {"error", "skip"});
  auto positive = [](const char* name, int64_t v) {
    if (v < 1) fail_value("TrainConfig: {} = {}: expected a positive integer", name, v);
  };
  auto non_negative = [](const char* name, double v) {
    if (!(v >= 0)) fail_value("TrainConfig: {} = {}: expected a value >= 0", name, v);
  };
  positive("batch_size", batch_size);
  positive("epochs", epochs);
  positive("accum_freq", accum_freq);
  positive("log_every_n_steps", log_every_n_steps);
  positive("distill_hidden", distill_hidden);
  positive("concept_hidden", concept_hidden);
  if (eval_every_n_steps < 0) fail_value("TrainConfig: eval_every_n_steps = {}: expected a value >= 0", eval_every_n_steps);
  if (eval_every_n_steps > 0 && val_zeroshot.empty() && val_retrieval.empty())
    fail_value("TrainConfig: eval_every_n_steps = {} needs val_zeroshot or val_retrieval", eval_every_n_steps);
  for (auto [name, v] : {std::pair{"max_steps", max_steps}, {"warmup", warmup}, {"workers", workers},
                         {"save_frequency", save_frequency}, {"save_every_n_steps", save_every_n_steps},
                         {"keep", keep}, {"teacher_dim", teacher_dim}, {"num_concepts", num_concepts},
                         {"concept_top_k", concept_top_k}})
    non_negative(name, static_cast<double>(v));
  for (auto [name, v] : {std::pair{"lr", lr}, {"wd", wd}, {"eps", eps}, {"alpha", alpha}, {"beta", beta},
                         {"gamma", gamma}, {"grad_clip_norm", grad_clip_norm},
                         {"concept_temperature", concept_temperature}})
    non_negative(name, v);
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
    fail_value("TrainConfig: beta1 = {}, beta2 = {}: expected values in [0, 1)", beta1, beta2);
  if (!(dist_timeout > 0)) fail_value("TrainConfig: dist_timeout = {}: expected seconds > 0", dist_timeout);
  if (alpha == 0 && beta == 0 && gamma == 0) fail_value("TrainConfig: alpha, beta and gamma are all 0: nothing to train");
  if (lock_image && lock_text) fail_value("TrainConfig: lock_image and lock_text together leave nothing to train");
  if (csv_separator.size() > 1 && csv_separator != "\\t")
    fail_value("TrainConfig: csv_separator '{}': expected one character or \\t", csv_separator);
  double lo = 0, hi = 0;
  if (std::sscanf(aug_scale.c_str(), "%lf,%lf", &lo, &hi) != 2 || !(0 < lo && lo <= hi && hi <= 1))
    fail_value("TrainConfig: aug_scale '{}': expected LO,HI with 0 < LO <= HI <= 1", aug_scale);
}

KnowledgeClipLossOptions knowledge_clip_loss_options(const TrainConfig& c, int64_t embed_dim, int64_t teacher_dim,
                                                     int64_t num_concepts) {
  KnowledgeClipLossOptions o(embed_dim, c.alpha > 0 ? teacher_dim : 0, c.beta > 0 ? num_concepts : 0);
  o.alpha(c.alpha).beta(c.beta).gamma(c.gamma)
      .distill_head(c.distill_head).distill_hidden(c.distill_hidden).distill_kind(c.distill_kind)
      .concept_mode(c.concept_mode).concept_hidden(c.concept_hidden);
  return o;
}

double learning_rate_at(const TrainConfig& c, int64_t step, int64_t total_steps) {
  if (step < c.warmup) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup);
  if (c.lr_scheduler == "const") return c.lr;
  const double e = static_cast<double>(step - c.warmup), es = static_cast<double>(total_steps - c.warmup);
  if (es <= 0 || e >= es) return 0.0;
  return 0.5 * (1 + std::cos(M_PI * e / es)) * c.lr;
}

}  // namespace kclip
