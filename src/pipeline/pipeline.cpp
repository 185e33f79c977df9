// run_pipeline: embed → cluster → train → eval → export → plots, each stage skipped when its record matches the
// fingerprint of what it would be made from, rerun (with every later stage) when not, resumed when killed.
#include <kclip/pipeline.h>
#include <kclip/cluster.h>
#include <kclip/embedding_cache.h>
#include <kclip/error.h>
#include <kclip/teacher.h>

#include "core/file_lock.h"
#include "core/model_files.h"
#include "data/csv.h"  // read_text_file
#include "eval/eval_data.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>

namespace kclip {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

std::string hex_fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

// What a path argument refers to, cheaply: files by size and modification time, directories by their entries',
// anything else (a data set name such as "fashion-mnist", a config name) by its text.
std::string path_stamp(const std::string& spec) {
  if (spec.empty()) return "";
  std::error_code ec;
  const fs::path path(spec);
  auto stamp_file = [&](const fs::path& p) {
    const auto size = fs::file_size(p, ec);
    const auto time = fs::last_write_time(p, ec).time_since_epoch().count();
    return fmt::format("{}:{}:{};", p.filename().string(), size, time);
  };
  if (fs::is_regular_file(path, ec)) return stamp_file(path);
  if (fs::is_directory(path, ec)) {
    std::vector<std::string> parts;
    for (const auto& entry : fs::directory_iterator(path, ec)) parts.push_back(stamp_file(entry.path()));
    std::sort(parts.begin(), parts.end());
    return fmt::format("{}", fmt::join(parts, ""));
  }
  return spec;
}

std::vector<std::string> unique_sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

DataSource open_training_data(const TrainConfig& t) {
  DataSourceOptions so;
  so.type(t.dataset_type).templates(caption_templates(t.templates));
  so.csv(CsvDatasetOptions().img_key(t.csv_img_key).caption_key(t.csv_caption_key).separator(csv_separator(t.csv_separator)));
  return open_data_source(t.train_data, so);
}

struct Paths {
  fs::path run, cache, concepts, train, checkpoints, results, exported, plots, stages;
  explicit Paths(const fs::path& dir)
      : run(dir), cache(dir / "teacher_cache"), concepts(dir / "concepts.safetensors"), train(dir / "train"),
        checkpoints(dir / "train" / "checkpoints"), results(dir / "results.json"), exported(dir / "export"),
        plots(dir / "plots"), stages(dir / "stages") {}
};

// The training configuration the pipeline runs: the user's, with the run's artifacts filled in.
TrainConfig training_config(const RunConfig& c, const Paths& p) {
  TrainConfig t = c.train;
  t.teacher_cache = c.teacher_model.empty() ? "" : p.cache.string();
  t.concepts = c.concepts_k > 0 ? p.concepts.string() : "";
  t.logs = p.run.string();
  t.name = "train";
  t.resume = "";
  return t;
}

EvalSuiteOptions eval_options(const RunConfig& c, const Paths& p) {
  EvalSuiteOptions e = c.eval;
  e.quiet(true);
  if (c.eval_concepts && c.concepts_k > 0 && !c.teacher_model.empty() &&
      !(e.concept_data().empty() && e.retrieval().empty() && e.text_probe().empty()))
    e.concepts(p.concepts.string()).teacher_cache(p.cache.string());
  return e;
}

// The training data's captions, deduplicated and sorted (what K-means clusters).
std::vector<std::string> training_captions(const RunConfig& c) {
  const DataSource source = open_training_data(c.train);
  if (!source.dataset)
    fail_value("run: the embed stage reads the captions of train.train_data; tar shards ({}) need a cache made "
               "beforehand with `kclip embed`", c.train.train_data);
  return unique_sorted(source.dataset->captions());
}

// Captions the teacher embeds: the training captions and those of the evaluation pairs (concept agreement reads them).
std::vector<std::string> captions_to_embed(std::vector<std::string> captions, const EvalSuiteOptions& e) {
  if (!e.concepts().empty()) {
    const std::string pairs = !e.concept_data().empty() ? e.concept_data() : !e.retrieval().empty() ? e.retrieval() : e.text_probe();
    const auto table = detail::read_pairs(pairs, e.columns());
    captions.insert(captions.end(), table.captions.begin(), table.captions.end());
  }
  return unique_sorted(std::move(captions));
}

// The settings and inputs of every stage, each chained to the fingerprints of the stages before it.
struct Stage {
  std::string name;
  bool on = false;
  json settings;
  std::string fingerprint;
  std::vector<std::string> captions;  // read once while planning: embed's captions, cluster's training captions
};

std::vector<Stage> describe_stages(const RunConfig& c, const Paths& p) {
  const TrainConfig t = training_config(c, p);
  const EvalSuiteOptions e = eval_options(c, p);
  std::vector<Stage> stages(6);
  stages[0].name = "embed";
  stages[0].on = !c.teacher_model.empty();
  if (stages[0].on) {
    std::vector<std::string> training = training_captions(c);
    const std::vector<std::string> captions = captions_to_embed(training, e);
    stages[0].captions = captions;
    stages[1].captions = std::move(training);
    stages[0].settings = {{"teacher", checkpoint_fingerprint(c.teacher_model)}, {"tokenizer", path_stamp(c.teacher_tokenizer)},
                          {"pooling", c.teacher_pooling}, {"layer", c.teacher_layer}, {"max_length", c.teacher_max_length},
                          {"dtype", c.teacher_dtype}, {"captions", captions.size()},
                          {"captions_hash", hex_fnv1a(fmt::format("{}", fmt::join(captions, "\n")))}};
  }
  stages[1].name = "cluster";
  stages[1].on = c.concepts_k > 0 && !c.teacher_model.empty();
  if (stages[1].on)
    stages[1].settings = {{"k", c.concepts_k}, {"iters", c.concepts_iters}, {"n_init", c.concepts_n_init},
                          {"seed", c.concepts_seed}, {"tol", c.concepts_tol}, {"metric", c.concepts_metric},
                          {"init", c.concepts_init}};
  json train_settings = json::parse(t.to_json());
  for (const char* volatile_key : {"workers", "progress", "log_every_n_steps", "keep", "resume", "dist_timeout"})
    train_settings.erase(volatile_key);  // how it runs, not what it computes
  train_settings["train_data_stamp"] = path_stamp(t.train_data);
  train_settings["model_stamp"] = path_stamp(t.model);
  stages[2] = {"train", true, train_settings, "", {}};
  json eval_settings = {{"zeroshot", e.zeroshot()}, {"templates", e.templates()}, {"retrieval", path_stamp(e.retrieval())},
                        {"linear_probe", e.linear_probe()}, {"text_probe", path_stamp(e.text_probe())},
                        {"text_probe_epochs", e.text_probe_epochs()}, {"text_probe_width", e.text_probe_width()},
                        {"concepts", !e.concepts().empty()}, {"concept_data", path_stamp(e.concept_data())},
                        {"img_key", e.columns().img_key()}, {"caption_key", e.columns().caption_key()}};
  stages[3] = {"eval", c.has_eval(), eval_settings, "", {}};
  stages[4] = {"export", !c.export_layouts.empty(), json{{"layouts", c.export_layouts}}, "", {}};
  stages[5] = {"plots", c.plots, json::object(), "", {}};
  std::string chain;
  for (auto& s : stages) {
    if (!s.on) continue;
    chain += s.name + ":" + s.settings.dump() + ";";
    s.fingerprint = hex_fnv1a(chain);  // a changed stage changes every later fingerprint
  }
  return stages;
}

json read_record(const Paths& p, const std::string& stage) {
  const fs::path file = p.stages / (stage + ".json");
  std::error_code ec;
  if (!fs::exists(file, ec)) return json();
  try {
    return json::parse(detail::read_text_file(file));
  } catch (const json::exception&) {
    return json();  // a damaged record counts as none: the stage reruns
  }
}

void write_record(const Paths& p, const Stage& s, const std::string& status, double seconds) {
  fs::create_directories(p.stages);
  json record = {{"stage", s.name}, {"status", status}, {"fingerprint", s.fingerprint}, {"settings", s.settings},
                 {"seconds", seconds}, {"time", static_cast<int64_t>(std::time(nullptr))}};
  detail::write_text_atomically(p.stages / (s.name + ".json"), record.dump(2) + "\n");
}

StagePlan plan_stage(const Paths& p, const Stage& s, bool earlier_reran) {
  if (!s.on) return {s.name, "off", "not configured", ""};
  const json record = read_record(p, s.name);
  if (record.is_null()) return {s.name, "run", "no record", s.fingerprint};
  if (!detail::json_field_is(record, "fingerprint", s.fingerprint)) {
    const bool same_settings = record.is_object() && record.contains("settings") && record["settings"] == s.settings;
    return {s.name, "run", same_settings || earlier_reran ? "an earlier stage changed" : "settings or inputs changed",
            s.fingerprint};
  }
  if (detail::json_field_is(record, "status", "done")) return {s.name, "skip", "up to date", s.fingerprint};
  return {s.name, "resume", "interrupted", s.fingerprint};
}

std::vector<StagePlan> plan(const RunConfig& c, const Paths& p, std::vector<Stage>* stages_out) {
  std::vector<Stage> stages = describe_stages(c, p);
  std::vector<StagePlan> plans;
  bool reran = false;
  for (const auto& s : stages) {
    StagePlan sp = plan_stage(p, s, reran);
    if (reran && sp.action == "skip") sp = {s.name, "run", "an earlier stage changed", s.fingerprint};
    reran = reran || sp.action == "run";
    plans.push_back(sp);
  }
  if (stages_out) *stages_out = std::move(stages);
  return plans;
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) fail("{}: cannot remove: {}", path.string(), ec.message());
}

// ---- the stages -------------------------------------------------------------------------------------------------

void run_embed(const RunConfig& c, const Paths& p, bool fresh, const std::vector<std::string>& captions) {
  if (fresh) remove_tree(p.cache);
  auto teacher = LlamaTeacher::load(c.teacher_model, c.teacher_tokenizer,
                                    LlamaTeacherOptions().pooling(c.teacher_pooling).layer(c.teacher_layer)
                                        .max_length(c.teacher_max_length));
  std::string dtype = c.teacher_dtype;
  std::transform(dtype.begin(), dtype.end(), dtype.begin(), ::toupper);
  EmbeddingCache::build(p.cache, *teacher, captions,
                        EmbeddingCacheOptions().dtype(dtype).batch_size(c.teacher_batch_size).progress(false));
}

void run_cluster(const RunConfig& c, const Paths& p, const std::vector<std::string>& training_captions) {
  const EmbeddingCache cache(p.cache);
  const at::Tensor x = cache.get(training_captions);  // the training captions only
  KMeans kmeans(KMeansOptions(c.concepts_k).iters(c.concepts_iters).n_init(c.concepts_n_init).seed(c.concepts_seed)
                    .tol(c.concepts_tol).metric(c.concepts_metric).init(c.concepts_init));
  kmeans.fit(x);
  kmeans.save(p.concepts, {{"teacher_id", cache.teacher_id()}, {"source", p.cache.string()}});
}

fs::path run_train(const RunConfig& c, const Paths& p, bool fresh) {
  if (fresh) remove_tree(p.train);
  TrainConfig t = training_config(c, p);
  std::error_code ec;
  if (fs::exists(p.checkpoints, ec) && !latest_checkpoint(p.checkpoints).empty()) t.resume = "latest";
  Trainer trainer(t);
  trainer.fit();
  return latest_checkpoint(p.checkpoints);
}

void run_export(const RunConfig& c, const Paths& p, const fs::path& checkpoint) {
  remove_tree(p.exported);
  fs::create_directories(p.exported);
  CLIP model(CLIPImpl::load(checkpoint / "model.safetensors"));
  for (const auto& layout : c.export_layouts)
    model->save(layout == "hf" ? p.exported / "hf" : p.exported / "model.safetensors", layout);
}

}  // namespace

std::vector<StagePlan> plan_run(const RunConfig& config) { return plan(config, Paths(config.run_dir), nullptr); }

RunSummary run_pipeline(const RunConfig& c, const std::function<void(const std::string&)>& log_fn) {
  auto log = [&](const std::string& line) {
    if (log_fn) log_fn(line);
    else std::fprintf(stderr, "%s\n", line.c_str());
  };
  const Paths p(c.run_dir);
  fs::create_directories(p.run);
  const detail::DirectoryLock lock(p.run, "another process is writing this run directory (wait for it or use another run_dir)");
  detail::write_text_atomically(p.run / "run.json", c.to_json() + "\n");
  std::vector<Stage> stages;
  RunSummary summary;
  summary.stages = plan(c, p, &stages);
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    const StagePlan& sp = summary.stages[i];
    double seconds = 0;
    if (sp.action == "run" || sp.action == "resume") {
      log(fmt::format("kclip run: {} ({}: {})", s.name, sp.action, sp.reason));
      const bool fresh = sp.action == "run";
      write_record(p, s, "running", 0);
      const auto start = std::chrono::steady_clock::now();
      if (s.name == "embed") run_embed(c, p, fresh, s.captions);
      if (s.name == "cluster") run_cluster(c, p, s.captions);
      if (s.name == "train") summary.checkpoint = run_train(c, p, fresh);
      if (s.name == "eval" || s.name == "export" || s.name == "plots") {
        if (summary.checkpoint.empty()) summary.checkpoint = latest_checkpoint(p.checkpoints);
      }
      if (s.name == "eval") {
        const std::string text = evaluate_all(summary.checkpoint.string(), eval_options(c, p));
        detail::write_text_atomically(p.results, text + "\n");
      }
      if (s.name == "export") run_export(c, p, summary.checkpoint);
      if (s.name == "plots") {
        fs::create_directories(p.plots);
        int status = plot_with_python(p.train / "metrics.jsonl", p.plots / "loss.png");
        std::error_code ec;
        if (status == 0 && fs::exists(p.results, ec)) status = plot_with_python(p.results, p.plots / "eval.png");
        if (status != 0) fail("plots: the matplotlib script failed (exit {}); install python3-matplotlib", status);
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      write_record(p, s, "done", seconds);
      log(fmt::format("kclip run: {} done in {:.1f} s", s.name, seconds));
    } else if (sp.action == "skip") {
      log(fmt::format("kclip run: {} (skip: up to date)", s.name));
    }
    summary.seconds.push_back(seconds);
  }
  if (summary.checkpoint.empty() && fs::exists(p.checkpoints)) summary.checkpoint = latest_checkpoint(p.checkpoints);
  std::error_code ec;
  if (fs::exists(p.results, ec)) summary.results_json = detail::read_text_file(p.results);
  return summary;
}

}  // namespace kclip
