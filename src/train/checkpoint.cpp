// Trainer checkpoints: written into a temporary directory and renamed into place (a reader never sees half of
// one), resumed exactly (weights, optimizer, data cursors of every rank, RNG, metrics file position).
//
//   checkpoints/step_00000100/model.safetensors      the student, OpenAI layout (loadable by CLIP::load)
//                             loss.safetensors       the loss modules' parameters and buffers
//                             optimizer.safetensors  AdamW's moments, with its step count and parameter names
//                             trainer_state.json     step, cursors, RNG, metrics offset, config
#include <kclip/error.h>
#include <kclip/safetensors.h>
#include <kclip/train.h>

#include "core/model_files.h"
#include "train/trainer_impl.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <regex>
#include <unistd.h>

namespace kclip {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

const std::regex kStepDir(R"(step_(\d{8,}))");

std::string checkpoint_name(int64_t step) { return fmt::format("step_{:08d}", step); }

// The step of a checkpoint directory's name, -1 when it is not one.
int64_t step_of(const fs::path& dir) {
  std::smatch m;
  const std::string name = dir.filename().string();
  return std::regex_match(name, m, kStepDir) ? std::stoll(m[1]) : -1;
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open to sync: {}", path.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail("{}: fsync failed: {}", path.string(), std::strerror(errno));
}

std::string to_hex(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  const auto* p = b.data_ptr<uint8_t>();
  std::string out;
  out.reserve(static_cast<size_t>(b.numel()) * 2);
  for (int64_t i = 0; i < b.numel(); ++i) out += fmt::format("{:02x}", p[i]);
  return out;
}

at::Tensor from_hex(const std::string& hex, const std::string& where) {
  if (hex.size() % 2) fail("{}: 'rng' is not a hex string", where);
  at::Tensor out = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  auto* p = out.data_ptr<uint8_t>();
  for (size_t i = 0; i < hex.size(); i += 2) {
    try {
      p[i / 2] = static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16));
    } catch (const std::exception&) {
      fail("{}: 'rng' is not a hex string", where);
    }
  }
  return out;
}

TensorDict module_state(const torch::nn::Module& m) {
  TensorDict state;
  for (const auto& p : m.named_parameters()) state.insert(p.key(), p.value().detach());
  for (const auto& b : m.named_buffers()) state.insert(b.key(), b.value().detach());
  return state;
}

void load_module_state(torch::nn::Module& m, const TensorDict& state, const std::string& source) {
  TensorDict targets = module_state(m);
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& t : targets)
    if (!state.contains(t.key())) missing.push_back(t.key());
    else if (state[t.key()].sizes() != t.value().sizes()) misshaped.push_back(t.key());
  for (const auto& s : state)
    if (!targets.contains(s.key())) unexpected.push_back(s.key());
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty())
    fail("{}: the loss state does not fit these loss settings: missing [{}]; unexpected [{}]; misshaped [{}]", source,
         fmt::join(missing, ", "), fmt::join(unexpected, ", "), fmt::join(misshaped, ", "));
  at::NoGradGuard no_grad;
  for (auto& t : targets) t.value().copy_(state[t.key()]);
}

// The figures of the step the checkpoint follows (terms not computed are left out: JSON has no NaN).
json last_step_json(const StepResult& r) {
  json j = {{"step", r.step}, {"lr", r.lr}, {"grad_norm", r.grad_norm}, {"logit_scale", r.logit_scale}};
  for (auto [key, value] : {std::pair{"loss", r.loss}, {"contrastive", r.contrastive}, {"distillation", r.distillation},
                            {"concept", r.concept}})
    if (std::isfinite(value)) j[key] = value;
  return j;
}

void check_finite(torch::nn::Module& m, const char* what, int64_t step) {
  for (const auto& p : m.named_parameters())
    if (!at::isfinite(p.value()).all().item<bool>())
      fail("step {}: {} parameter '{}' holds NaN/Inf: checkpoint not written", step, what, p.key());
}

}  // namespace

fs::path latest_checkpoint(const fs::path& checkpoints) {
  std::error_code ec;
  if (!fs::is_directory(checkpoints, ec)) return {};
  fs::path best;
  int64_t best_step = -1;
  for (const auto& entry : fs::directory_iterator(checkpoints)) {
    const int64_t step = step_of(entry.path());
    if (step > best_step && fs::is_regular_file(entry.path() / "trainer_state.json", ec)) {
      best_step = step;
      best = entry.path();
    }
  }
  return best;
}

KnowledgeClipLoss load_training_loss(const fs::path& checkpoint, int64_t embed_dim, int64_t teacher_dim,
                                     int64_t num_concepts) {
  const json state = json::parse(detail::read_json_file(checkpoint / "trainer_state.json").dump());
  if (!state.contains("config")) fail("{}: no 'config' in the trainer state", (checkpoint / "trainer_state.json").string());
  const TrainConfig config = TrainConfig::from_json(state["config"].dump(), (checkpoint / "trainer_state.json").string());
  const TensorDict saved = load_safetensors(checkpoint / "loss.safetensors");
  // Dimensions not given come from the saved tensors: the teacher's from the target statistics, K from a head.
  if (teacher_dim == 0 && saved.contains("distillation.target_mean")) teacher_dim = saved["distillation.target_mean"].numel();
  static const std::regex head_bias(R"(concept\.\w+_head\.2\.bias)");
  for (const auto& item : saved)
    if (num_concepts == 0 && std::regex_match(item.key(), head_bias)) num_concepts = item.value().numel();
  KnowledgeClipLoss loss(knowledge_clip_loss_options(config, embed_dim, teacher_dim, num_concepts));
  load_module_state(*loss, saved, (checkpoint / "loss.safetensors").string());
  loss->eval();
  return loss;
}

fs::path Trainer::save_checkpoint() {
  open_run_dir();
  const DataCursor cursor = loader_ ? loader_->cursor() : DataCursor{};
  const auto cursors = all_gather_ints({cursor.epoch, cursor.position, cursor.batches, cursor.skipped}, group_);
  const fs::path dir = checkpoint_dir() / checkpoint_name(step_);
  impl_->last_saved_step = step_;
  std::error_code ec;
  if (rank_ != 0 || fs::exists(dir, ec)) return dir;
  check_finite(*model_, "model", step_);
  check_finite(*loss_, "loss", step_);

  const fs::path temp = checkpoint_dir() / fmt::format(".{}.tmp-{}", checkpoint_name(step_), ::getpid());
  fs::remove_all(temp);
  fs::create_directories(temp);
  model_->save(temp / "model.safetensors", "openai");
  save_safetensors(temp / "loss.safetensors", module_state(*loss_), {{"format", "pt"}});
  save_safetensors(temp / "optimizer.safetensors", optimizer_->state_dict(), optimizer_->state_metadata());
  at::Tensor rng;
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng = generator.get_state();
  }
  const json state = {{"format", "kclip-train-state"},
                      {"step", step_},
                      {"epoch", cursor.epoch},
                      {"world_size", world_size_},
                      {"cursors", cursors},
                      {"skipped_steps", skipped_steps_},
                      {"metrics_bytes", impl_->metrics.bytes()},
                      {"total_steps", impl_->total_steps},
                      {"steps_per_epoch", impl_->steps_per_epoch},
                      {"rng", to_hex(rng)},
                      {"last_step", last_step_json(impl_->last_result)},
                      {"config", json::parse(config_.to_json())}};
  detail::write_text_atomically(temp / "trainer_state.json", state.dump(2) + "\n");
  for (const char* file : {"model.safetensors", "loss.safetensors", "optimizer.safetensors", "trainer_state.json"})
    fsync_path(temp / file, false);
  fsync_path(temp, true);
  fs::rename(temp, dir);
  fsync_path(checkpoint_dir(), true);

  if (config_.keep > 0) {  // prune: the newest `keep` checkpoints stay
    std::vector<std::pair<int64_t, fs::path>> all;
    for (const auto& entry : fs::directory_iterator(checkpoint_dir()))
      if (const int64_t step = step_of(entry.path()); step >= 0) all.emplace_back(step, entry.path());
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + static_cast<size_t>(config_.keep) < all.size(); ++i) fs::remove_all(all[i].second);
  }
  return dir;
}

bool Trainer::resume(const std::string& which) {
  open_run_dir();
  const fs::path dir = which == "latest" ? latest_checkpoint(checkpoint_dir()) : fs::path(which);
  const int64_t step = dir.empty() ? -1 : step_of(dir);
  if (all_reduce_min({step}, group_)[0] != all_reduce_max({step}, group_)[0])
    fail("ranks found different checkpoints to resume from ({} on rank {}): they must share the run directory",
         dir.string(), rank_);
  if (dir.empty()) {
    if (rank_ == 0 && config_.progress)
      impl_->progress.note(fmt::format("kclip train: no checkpoint in {}: starting from step 0", checkpoint_dir().string()));
    return false;
  }
  const std::string where = (dir / "trainer_state.json").string();
  std::error_code ec;
  if (!fs::is_regular_file(dir / "trainer_state.json", ec))
    fail("{}: not a kclip checkpoint directory (no trainer_state.json)", dir.string());
  const json state = json::parse(detail::read_json_file(dir / "trainer_state.json").dump());
  if (!detail::json_field_is(state, "format", "kclip-train-state")) fail("{}: not a kclip trainer state", where);
  try {
    const auto cursors = state.at("cursors").get<std::vector<std::vector<int64_t>>>();
    if (static_cast<int>(cursors.size()) != world_size_)
      fail("{}: written by {} rank(s); resume with the same number (the data order depends on it), or start a new run "
           "from its model.safetensors",
           dir.string(), cursors.size());
    const json saved = state.at("config");
    for (const char* key : {"train_data", "batch_size", "accum_freq", "seed", "dataset_type"})
      if (saved.contains(key) && saved[key].dump() != config_.get(key))
        fail("{}: trained with {} = {}, now {}: resuming would change the data order (start a new run from its "
             "model.safetensors to fine-tune)",
             dir.string(), key, saved[key].dump(), config_.get(key));

    model_->load_weights(load_safetensors(dir / "model.safetensors"), (dir / "model.safetensors").string());
    load_module_state(*loss_, load_safetensors(dir / "loss.safetensors"), (dir / "loss.safetensors").string());
    SafetensorsFile optimizer_file(dir / "optimizer.safetensors");
    optimizer_->load_state_dict(optimizer_file.load(), optimizer_file.metadata(), optimizer_file.path().string());

    step_ = detail::json_int(state.at("step"));
    skipped_steps_ = detail::json_int(state.at("skipped_steps"));
    if (loader_) {
      const auto& c = cursors.at(static_cast<size_t>(rank_));
      if (c.size() != 4) fail("{}: a cursor must hold 4 numbers", where);
      loader_->seek(DataCursor{c[0], c[1], c[2], c[3]});
    }
    {
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(from_hex(state.at("rng").get<std::string>(), where));
    }
    if (rank_ == 0) impl_->metrics.truncate_to(detail::json_int(state.at("metrics_bytes")));
  } catch (const json::exception& e) {
    fail("{}: missing or mistyped field: {}", where, e.what());
  }
  impl_->last_saved_step = step_;
  if (rank_ == 0 && config_.progress)
    impl_->progress.note(fmt::format("kclip train: resumed from {} (step {})", dir.string(), step_));
  return true;
}

}  // namespace kclip
