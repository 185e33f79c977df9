// The trainer: set-up (process group, student, teacher targets, loss, optimizer, data), one optimizer step, and
// the training loop with metrics and checkpoints. Checkpoint files are written and read in checkpoint.cpp.
#include <kclip/error.h>
#include <kclip/eval.h>
#include <kclip/runtime.h>
#include <kclip/train.h>

#include "core/autocast.h"
#include "core/model_files.h"
#include "train/trainer_impl.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <tuple>
#include <utility>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace kclip {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// This process's GPU: LOCAL_RANK under torchrun, else 0.
c10::Device local_cuda_device() {
  const char* local = std::getenv("LOCAL_RANK");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local ? std::atoi(local) : 0));
}

c10::Device choose_device(const std::string& requested) {
  if (!requested.empty()) {
    try {
      c10::Device d(requested);
      if (d.is_cuda() && !torch::cuda::is_available()) fail_value("device '{}': CUDA is not available here", requested);
      return d.is_cuda() && !d.has_index() ? local_cuda_device() : d;  // "cuda" names a GPU by number
    } catch (const c10::Error&) {
      fail_value("device '{}': expected cpu, cuda or cuda:N", requested);
    }
  }
  return torch::cuda::is_available() ? local_cuda_device() : c10::Device(c10::kCPU);
}

// --model: a config name, a config file, or a checkpoint to start from.
CLIP make_student(const std::string& spec) {
  const fs::path path(spec);
  std::error_code ec;
  if (path.extension() == ".json") return CLIP(CLIPConfig::from_json(path));
  if (fs::exists(path, ec)) return CLIP(CLIPImpl::load(path));
  return CLIP(CLIPConfig::named(spec));
}

// open_clip's parameter groups: no weight decay on gains, biases, embeddings and the logit scale.
bool without_weight_decay(const std::string& name, const at::Tensor& p) {
  for (const char* part : {"positional_embedding", "class_embedding", "token_embedding", "logit_scale"})
    if (name.find(part) != std::string::npos) return true;
  return p.dim() < 2;
}

bool is_image_tower(const std::string& name) { return name.rfind("visual.", 0) == 0; }

// Per-dimension mean and population std of every cached embedding, accumulated in float64 chunk by chunk (the
// cache may be far larger than memory).
std::pair<at::Tensor, at::Tensor> cache_statistics(const EmbeddingCache& cache) {
  at::Tensor sum = at::zeros({cache.dim()}, at::kDouble), squares = at::zeros({cache.dim()}, at::kDouble);
  int64_t rows = 0;
  for (const at::Tensor& shard : cache.shards())
    for (int64_t start = 0; start < shard.size(0); start += 4096) {
      const at::Tensor x = shard.narrow(0, start, std::min<int64_t>(4096, shard.size(0) - start)).to(at::kDouble);
      sum += x.sum(0);
      squares += (x * x).sum(0);
      rows += x.size(0);
    }
  if (rows == 0) fail("{}: the teacher cache is empty", cache.directory().string());
  const at::Tensor mean = sum / static_cast<double>(rows);
  const at::Tensor std = (squares / static_cast<double>(rows) - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6);
  return {mean.to(at::kFloat), std.to(at::kFloat)};
}

std::string run_name(const TrainConfig& c, int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y_%m_%d-%H_%M_%S", &tm);
  return fmt::format("{}-model_{}-lr_{}-b_{}", stamp, fs::path(c.model).stem().string(), c.lr, c.batch_size);
}

std::string describe_terms(const KnowledgeClipLossOptions& o) {
  std::vector<std::string> terms;
  if (o.gamma() != 0) terms.push_back(fmt::format("{}·contrastive", o.gamma()));
  if (o.alpha() != 0) terms.push_back(fmt::format("{}·distillation ({} head, teacher dim {})", o.alpha(), o.distill_head(), o.teacher_dim()));
  if (o.beta() != 0) terms.push_back(fmt::format("{}·concept ({} concepts, {})", o.beta(), o.num_concepts(), o.concept_mode()));
  return fmt::format("{}", fmt::join(terms, " + "));
}

}  // namespace

// ---- set-up ---------------------------------------------------------------------------------------------------

Trainer::Trainer(TrainConfig config, ProcessGroupPtr group) : impl_(std::make_unique<Impl>()), config_(std::move(config)) {
  init();
  retain_freed_memory();  // each step reuses the last one's memory: no page faults on fresh activations
  config_.validate();
  device_ = choose_device(config_.device);
  if (device_.is_cuda()) c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(device_);
  group_ = group ? std::move(group) : init_process_group_from_env(device_.is_cuda() ? "nccl" : "gloo", config_.dist_timeout);
  rank_ = rank_of(group_);
  world_size_ = world_size_of(group_);
  impl_->autocast = config_.precision == "amp_bf16";

  torch::manual_seed(config_.seed);
  model_ = make_student(config_.model);
  load_targets();
  build_loss();
  model_->to(device_);
  loss_->to(device_);
  if (config_.grad_checkpointing) model_->set_grad_checkpointing(true);
  freeze_and_group();
  name_run();
  build_data();
}

Trainer::~Trainer() = default;

void Trainer::load_targets() {
  const bool needs_teacher = config_.alpha > 0 || config_.beta > 0;
  if (!config_.teacher_cache.empty() && needs_teacher) {
    auto cache = std::make_shared<EmbeddingCache>(config_.teacher_cache);
    if (!cache->complete())
      fail("{}: the teacher cache is incomplete (resume `kclip embed` to finish it)", config_.teacher_cache);
    if (config_.teacher_dim && config_.teacher_dim != cache->dim())
      fail_value("teacher_dim {} but the cache {} holds {}-d embeddings", config_.teacher_dim, config_.teacher_cache, cache->dim());
    impl_->cache = std::move(cache);
  }
  if (!config_.concepts.empty() && config_.beta > 0) {
    impl_->concepts = std::make_shared<KMeans>(KMeans::load(config_.concepts));
    const int64_t k = impl_->concepts->centroids().size(0);
    if (config_.num_concepts && config_.num_concepts != k)
      fail_value("num_concepts {} but {} holds {} centroids", config_.num_concepts, config_.concepts, k);
  }
  const bool data = !config_.train_data.empty();
  if (config_.alpha > 0 && !impl_->cache && (data || config_.teacher_dim == 0))
    fail_value("alpha = {} needs teacher embeddings: --teacher-cache DIR from `kclip embed` (or --alpha 0){}", config_.alpha,
               data ? "" : "; without training data, teacher_dim gives their dimension");
  if (config_.beta > 0 && !impl_->concepts && (data || config_.num_concepts == 0))
    fail_value("beta = {} needs concepts: --concepts FILE from `kclip cluster` (or --beta 0){}", config_.beta,
               data ? "" : "; without training data, num_concepts gives their number");
  if (config_.beta > 0 && data && !impl_->cache)
    fail_value("beta = {}: concept labels come from the teacher embeddings of --teacher-cache", config_.beta);
}

void Trainer::build_loss() {
  const int64_t teacher_dim = impl_->cache ? impl_->cache->dim() : config_.teacher_dim;
  const int64_t k = impl_->concepts ? impl_->concepts->centroids().size(0) : config_.num_concepts;
  KnowledgeClipLossOptions o = knowledge_clip_loss_options(config_, model_->config().embed_dim, teacher_dim, k);
  // Across ranks each rank scores its rows against every rank's columns and receives the gradient of every
  // rank's loss (local_loss + gather_with_grad): with DDP's gradient averaging this is exactly the gradient of
  // one process holding the whole batch, for every term.
  o.contrastive(ContrastiveLossOptions()
                       .init_logit_scale(model_->logit_scale.item<double>())
                       .process_group(group_)
                       .local_loss(world_size_ > 1)
                       .gather_with_grad(world_size_ > 1));
  loss_ = KnowledgeClipLoss(o);
  if (loss_->distillation && config_.standardize_targets && impl_->cache) {
    auto [mean, std] = cache_statistics(*impl_->cache);
    loss_->distillation->set_target_statistics(mean, std);
  }
  impl_->loss_description = describe_terms(o);
}

void Trainer::freeze_and_group() {
  AdamW::Group decay, no_decay;
  decay.weight_decay = config_.wd;
  for (auto& item : model_->named_parameters()) {
    at::Tensor& p = item.value();
    const std::string& name = item.key();
    // The loss module's logit scale is the one trained; the model's copy follows it after every step.
    const bool frozen = name == "logit_scale" || (config_.lock_image && is_image_tower(name)) ||
                        (config_.lock_text && !is_image_tower(name));
    p.set_requires_grad(!frozen);
    if (!frozen) (without_weight_decay(name, p) ? no_decay : decay).params.emplace_back("model." + name, p);
  }
  for (auto& item : loss_->named_parameters())
    (without_weight_decay(item.key(), item.value()) ? no_decay : decay).params.emplace_back("loss." + item.key(), item.value());
  if (world_size_ > 1) {  // every rank starts from rank 0's weights (they agree already when seeded alike)
    std::vector<at::Tensor> all;
    for (auto& p : model_->parameters()) all.push_back(p.detach());
    for (auto& p : loss_->parameters()) all.push_back(p.detach());
    for (auto& b : loss_->buffers()) all.push_back(b);
    broadcast_(all, group_);
  }
  optimizer_ = std::make_unique<AdamW>(std::vector<AdamW::Group>{std::move(decay), std::move(no_decay)}, config_.beta1,
                                       config_.beta2, config_.eps);
  if (world_size_ > 1) impl_->reducer = std::make_unique<detail::GradientReducer>(*optimizer_, group_);
}

// The run's name (a timestamp unless given) is rank 0's, so that every rank writes to the same place.
void Trainer::name_run() {
  if (config_.name.empty()) {
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    config_.name = run_name(config_, all_reduce_max({now}, group_)[0]);
  }
  if (config_.name.find('/') != std::string::npos || config_.name == "." || config_.name == "..")
    fail_value("--name '{}': expected a plain directory name", config_.name);
  run_dir_ = fs::path(config_.logs) / config_.name;
}

void Trainer::build_data() {
  if (config_.train_data.empty()) {
    impl_->total_steps = config_.max_steps;
    return;
  }
  const CLIPConfig& mc = model_->config();
  impl_->tokenizer = std::make_shared<ClipTokenizer>(config_.tokenizer, mc.context_length);
  DataSourceOptions so;
  so.type(config_.dataset_type).templates(caption_templates(config_.templates));
  so.csv(CsvDatasetOptions()
             .img_key(config_.csv_img_key)
             .caption_key(config_.csv_caption_key)
             .separator(csv_separator(config_.csv_separator))
             .bad_rows(config_.bad_samples));
  impl_->source = open_data_source(config_.train_data, so);

  ImageTransform transform;
  transform.size = mc.image_size;
  transform.random_resized_crop = !config_.no_aug;
  std::sscanf(config_.aug_scale.c_str(), "%lf,%lf", &transform.crop_scale[0], &transform.crop_scale[1]);
  DataLoaderOptions lo;
  lo.batch_size(config_.batch_size * config_.accum_freq)
      .workers(config_.workers)
      .seed(config_.seed)
      .rank(rank_)
      .world_size(world_size_)
      .drop_last(true)
      .bad_samples(config_.bad_samples)
      .transform(transform)
      .context_length(mc.context_length)
      .pin_memory(device_.is_cuda());
  TeacherTargets targets;
  if (config_.alpha > 0 || config_.beta > 0) targets.cache = impl_->cache;
  if (config_.beta > 0) targets.concepts = impl_->concepts;
  targets.concept_temperature = config_.concept_temperature;
  targets.concept_top_k = config_.concept_top_k;
  if (impl_->source.dataset)
    loader_ = std::make_unique<DataLoader>(impl_->source.dataset, lo, impl_->tokenizer, targets);
  else
    loader_ = std::make_unique<DataLoader>(impl_->source.webdataset, lo, impl_->tokenizer, targets);
  impl_->steps_per_epoch = loader_->batches_per_epoch();
  if (impl_->steps_per_epoch == 0)
    fail("{}: {} samples per rank make no batch of {}", impl_->source.describe(), loader_->samples_per_rank(),
         config_.batch_size * config_.accum_freq);
  impl_->total_steps = impl_->steps_per_epoch * config_.epochs;
  if (config_.max_steps > 0) impl_->total_steps = std::min(impl_->total_steps, config_.max_steps);
}

int64_t Trainer::epoch() const { return loader_ ? loader_->cursor().epoch : 0; }
int64_t Trainer::total_steps() const { return impl_->total_steps; }

// Rank 0 owns the run directory: created on first use, locked against a second trainer, config.json written.
void Trainer::open_run_dir() {
  if (impl_->run_dir_ready) return;
  if (rank_ != 0) {
    impl_->run_dir_ready = true;
    return;
  }
  fs::create_directories(checkpoint_dir());
  impl_->lock = detail::DirectoryLock(run_dir_, "another kclip trainer is using this run directory (choose another --name, or wait for it)");
  for (const auto& entry : fs::directory_iterator(checkpoint_dir()))  // left by a run that was killed mid-write
    if (entry.path().filename().string().rfind(".step_", 0) == 0) fs::remove_all(entry.path());
  detail::write_text_atomically(run_dir_ / "config.json", config_.to_json() + "\n");
  impl_->metrics.open(run_dir_ / "metrics.jsonl");
  impl_->run_dir_ready = true;
}

void Trainer::log_metrics(const std::string& json_object) {
  open_run_dir();
  if (rank_ == 0) impl_->metrics.write(json_object);
}

Trainer::Impl::~Impl() = default;

// ---- one step -------------------------------------------------------------------------------------------------

namespace {

void check_batch(const at::Tensor& images, const at::Tensor& text, const at::Tensor& teacher, const at::Tensor& concepts,
                 const TrainConfig& c, const KnowledgeClipLossImpl& loss) {
  const char* who = "Trainer.train_step";
  if (!images.defined() || images.dim() != 4) fail_value("{}: images must be [batch, 3, size, size]", who);
  if (!text.defined() || text.dim() != 2 || text.scalar_type() != at::kLong)
    fail_value("{}: text must be int64 token ids [batch, context_length]", who);
  const int64_t b = images.size(0);
  if (text.size(0) != b) fail_value("{}: {} images but {} texts", who, b, text.size(0));
  if (b % c.accum_freq != 0) fail_value("{}: batch {} does not split into accum_freq = {} micro-batches", who, b, c.accum_freq);
  if (loss.distillation && (!teacher.defined() || teacher.size(0) != b))
    fail_value("{}: alpha = {} needs teacher embeddings [batch, {}]", who, c.alpha, loss.options.teacher_dim());
  if (loss.concept && (!concepts.defined() || concepts.size(0) != b))
    fail_value("{}: beta = {} needs concept labels [batch, {}] (or class ids [batch])", who, c.beta, loss.options.num_concepts());
}

}  // namespace

StepResult Trainer::train_step(const at::Tensor& images, const at::Tensor& text, const at::Tensor& teacher,
                               const at::Tensor& concepts) {
  check_batch(images, text, teacher, concepts, config_, *loss_);
  if (config_.lr_scheduler == "cosine" && impl_->total_steps == 0)
    fail_value("Trainer.train_step: the cosine schedule needs its length: set max_steps (or train_data)");
  at::AutoGradMode grad_mode(true);  // a caller's no-grad scope (torch.no_grad, NoGradGuard) does not reach the step
  model_->train();
  loss_->train();
  const bool async = device_.is_cuda();
  auto to_device = [&](const at::Tensor& t) { return t.defined() ? t.to(device_, /*non_blocking=*/async) : t; };
  const at::Tensor x = to_device(images), ids = to_device(text), target = to_device(teacher), labels = to_device(concepts);

  const int64_t n = config_.accum_freq;
  KnowledgeClipLossOutput out;
  bool skip = false;
  if (n == 1) {
    auto [image_features, text_features] = encode(x, ids);
    out = loss_->forward(image_features, text_features, target, labels);
    skip = check_terms(out, target);
    if (!skip) backward(out.total, true);
  } else {
    // open_clip's accumulation: features of every micro-batch without a graph, then each micro-batch again with
    // one, the loss over all of them; the gradients of the micro-batches add up to the full batch's.
    const auto xs = x.chunk(n), ts = ids.chunk(n);
    std::vector<at::Tensor> image_features(static_cast<size_t>(n)), text_features(static_cast<size_t>(n));
    {
      at::NoGradGuard no_grad;
      for (int64_t i = 0; i < n; ++i) std::tie(image_features[i], text_features[i]) = encode(xs[i], ts[i]);
    }
    for (int64_t j = 0; j < n && !skip; ++j) {
      auto images_j = image_features, texts_j = text_features;
      std::tie(images_j[j], texts_j[j]) = encode(xs[j], ts[j]);
      out = loss_->forward(at::cat(images_j), at::cat(texts_j), target, labels);
      skip = check_terms(out, target);
      if (!skip) backward(out.total, j == n - 1);
    }
    // The loss modules' own parameters see the whole loss in every micro-batch's backward: counted once after
    // the gradients are reduced (dividing commutes with the all-reduce).
    impl_->loss_grad_divisor = n;
  }
  return finish_step(out, skip);
}

// Both towers, under bfloat16 autocast with --precision amp_bf16; the features come out in float32, so that the
// loss (and the teacher targets it compares with) stays in float32.
std::pair<at::Tensor, at::Tensor> Trainer::encode(const at::Tensor& images, const at::Tensor& text) {
  detail::AutocastGuard autocast(device_.type(), at::kBFloat16, impl_->autocast);
  return {model_->encode_image(images).to(at::kFloat), model_->encode_text(text).to(at::kFloat)};
}

// With several ranks, the gradients of the last pass are all-reduced bucket by bucket while backward runs.
void Trainer::backward(const at::Tensor& loss, bool last_pass) {
  if (impl_->reducer) impl_->reducer->prepare(last_pass);
  loss.backward();
}

// The loss terms are finite on every rank, or the step is stopped (error) or skipped (counted), as configured.
// Also averages the terms over ranks for reporting.
bool Trainer::check_terms(const KnowledgeClipLossOutput& out, const at::Tensor& teacher) {
  static const char* const kNames[] = {"total", "contrastive", "distillation", "concept"};
  const at::Tensor terms[] = {out.total, out.contrastive, out.distillation, out.concept};
  std::vector<double> local(4, 0.0), shared(8, 0.0);  // shared: values (finite ones), then non-finite flags
  for (size_t i = 0; i < 4; ++i) {
    if (!terms[i].defined()) continue;
    local[i] = terms[i].detach().to(at::kCPU, at::kDouble).item<double>();
    const bool finite = std::isfinite(local[i]);
    shared[i] = finite ? local[i] : 0.0;
    shared[4 + i] = finite ? 0.0 : 1.0;
  }
  if (world_size_ > 1) {
    at::Tensor t = at::tensor(shared, at::kDouble).to(device_);
    all_reduce_mean_({t}, group_);
    t = t.cpu();
    shared.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  }
  for (size_t i = 0; i < 4; ++i) impl_->term_means[i] = terms[i].defined() ? shared[i] : std::nan("");
  // The first non-finite term names the problem (the total only when every term is finite but their sum is not).
  for (size_t i : {1, 2, 3, 0}) {
    if (shared[4 + i] == 0) continue;
    const std::string value = std::isfinite(local[i]) ? "not finite on another rank" : fmt::format("{}", local[i]);
    std::string hint;
    if (i == 2 && teacher.defined() && !at::isfinite(teacher).all().item<bool>())
      hint = " (the teacher embeddings of this batch hold NaN/Inf: check the embedding cache)";
    const std::string message =
        fmt::format("step {}: the {} term of the loss is {}{}", step_ + 1, kNames[i], value, hint);
    if (config_.nonfinite == "error")
      fail("{}; training stopped before the update (--nonfinite skip skips such steps)", message);
    impl_->last_skip_reason = message;
    return true;
  }
  return false;
}

StepResult Trainer::finish_step(const KnowledgeClipLossOutput&, bool skip) {
  StepResult result;
  const int64_t divisor = std::exchange(impl_->loss_grad_divisor, 1);
  result.loss = impl_->term_means[0];
  result.contrastive = impl_->term_means[1];
  result.distillation = impl_->term_means[2];
  result.concept = impl_->term_means[3];
  if (!skip) {
    if (impl_->reducer) impl_->reducer->finish();
    optimizer_->sync_grads();
    if (divisor > 1) {
      at::NoGradGuard no_grad;
      for (auto& p : loss_->parameters())
        if (p.grad().defined()) p.mutable_grad().div_(static_cast<double>(divisor));
    }
    result.grad_norm = optimizer_->grad_norm();  // equal on every rank after the all-reduce
    if (!std::isfinite(result.grad_norm)) {
      const std::string name = optimizer_->first_nonfinite_grad();
      const std::string message = fmt::format("step {}: the gradient of {} is not finite", step_ + 1, name);
      if (config_.nonfinite == "error") fail("{}; training stopped before the update (--nonfinite skip skips such steps)", message);
      impl_->last_skip_reason = message;
      skip = true;
    }
  }
  if (skip) {
    optimizer_->zero_grad();
    ++skipped_steps_;
    result.skipped = true;
    result.step = step_;
    return result;
  }
  if (config_.grad_clip_norm > 0) {
    const double coefficient = config_.grad_clip_norm / (result.grad_norm + 1e-6);  // torch's clip_grad_norm_
    if (coefficient < 1) optimizer_->scale_grads(coefficient);
  }
  result.lr = learning_rate_at(config_, step_, impl_->total_steps);
  optimizer_->step(result.lr);
  optimizer_->zero_grad();
  if (loss_->contrastive) {
    loss_->contrastive->clamp_logit_scale_();
    at::NoGradGuard no_grad;
    model_->logit_scale.copy_(loss_->contrastive->logit_scale);
  }
  result.logit_scale = std::exp(model_->logit_scale.item<double>());
  result.step = ++step_;
  impl_->last_result = result;
  return result;
}

// ---- the loop -------------------------------------------------------------------------------------------------

StepResult Trainer::fit() {
  try {
    return run_loop();
  } catch (const Error&) {
    throw;
  } catch (const ValueError&) {
    throw;
  } catch (const std::exception& e) {  // c10d / Gloo: a peer died or a collective timed out
    if (world_size_ == 1) throw;
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    fail("rank {} of {}: a collective with the other ranks failed (a rank died, or none answered within "
         "--dist-timeout {} s): {}", rank_, world_size_, config_.dist_timeout,
         c10_error ? c10_error->what_without_backtrace() : e.what());
  }
}

StepResult Trainer::run_loop() {
  if (!loader_) fail_value("Trainer.fit: the config names no train_data");
  open_run_dir();
  impl_->progress.configure(config_.progress && rank_ == 0, config_.log_every_n_steps);
  if (!config_.resume.empty()) resume(config_.resume);
  announce();
  StepResult last;
  const auto start = std::chrono::steady_clock::now();
  const int64_t start_step = step_;
  double data_seconds = 0, step_seconds = 0;
  while (step_ < impl_->total_steps && loader_->cursor().epoch < config_.epochs) {
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<Batch> batch = loader_->next();
    const auto t1 = std::chrono::steady_clock::now();
    if (all_reduce_min({batch ? 1 : 0}, group_)[0] == 0) {  // this epoch is over on some rank: on all of them
      if (batch) loader_->end_epoch();
      const int64_t finished = loader_->cursor().epoch;
      if (config_.save_frequency > 0 && finished % config_.save_frequency == 0) save_checkpoint();
      continue;
    }
    try {
      last = train_step(batch->images, batch->text, batch->teacher, batch->concepts);
    } catch (const Error& e) {
      fail("{} (epoch {}, batch {} of the epoch, first sample {})", e.what(), batch->epoch, batch->index,
           batch->keys.empty() ? "?" : batch->keys.front());
    }
    const auto t2 = std::chrono::steady_clock::now();
    const double data = std::chrono::duration<double>(t1 - t0).count();
    const double total = std::chrono::duration<double>(t2 - t0).count();
    data_seconds += data;
    step_seconds += total;
    report(last, *batch, data, total, std::chrono::duration<double>(t2 - start).count(), start_step);
    if (!last.skipped && config_.save_every_n_steps > 0 && step_ % config_.save_every_n_steps == 0) save_checkpoint();
    if (!last.skipped && config_.eval_every_n_steps > 0 && step_ % config_.eval_every_n_steps == 0) evaluate_now();
    if (on_step) on_step(last);
  }
  if (impl_->last_saved_step != step_) save_checkpoint();
  if (config_.eval_every_n_steps > 0 && impl_->last_evaluated_step != step_) evaluate_now();
  if (rank_ == 0 && config_.progress) {
    const int64_t steps = step_ - start_step;
    impl_->progress.note(fmt::format("kclip train: {} steps in {:.1f} s ({:.1f} % waiting for data); final checkpoint {}",
                                     steps, step_seconds, step_seconds > 0 ? 100 * data_seconds / step_seconds : 0.0,
                                     (checkpoint_dir() / fmt::format("step_{:08d}", step_)).string()));
  }
  return last;
}

// The configured evaluations on rank 0 (the other ranks wait for it at their next collective), as a metrics record.
void Trainer::evaluate_now() {
  impl_->last_evaluated_step = step_;
  if (rank_ != 0) return;
  const auto start = std::chrono::steady_clock::now();
  const ClipTokenizer& tokenizer = *impl_->tokenizer;
  json record = {{"type", "eval"}, {"step", step_}, {"epoch", epoch()}};
  if (!config_.val_zeroshot.empty()) {
    const auto templates = caption_templates(config_.val_templates);
    if (!impl_->val_zeroshot) {
      impl_->val_zeroshot = open_data_source(config_.val_zeroshot, DataSourceOptions().templates(templates).split("test")).dataset;
      if (!impl_->val_zeroshot) fail_value("--val-zeroshot {}: expected an image folder, fashion-mnist or mnist", config_.val_zeroshot);
    }
    record["zeroshot"] = json::parse(to_json(evaluate_zeroshot(model_, tokenizer, impl_->val_zeroshot, templates, 256,
                                                               config_.workers), impl_->val_zeroshot->classes()));
  }
  if (!config_.val_retrieval.empty()) {
    const auto columns = CsvDatasetOptions()
                             .img_key(config_.csv_img_key)
                             .caption_key(config_.csv_caption_key)
                             .separator(csv_separator(config_.csv_separator));
    record["retrieval"] = json::parse(to_json(evaluate_retrieval(model_, tokenizer, config_.val_retrieval, columns, 256,
                                                                 config_.workers)));
  }
  record["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log_metrics(record.dump());
  std::string line = fmt::format("kclip train: evaluation at step {}:", step_);
  if (record.contains("zeroshot")) line += fmt::format(" zero-shot top-1 {:.4f}", record["zeroshot"]["top1"].get<double>());
  if (record.contains("retrieval"))
    line += fmt::format(" retrieval R@1 i→t {:.4f} t→i {:.4f}", record["retrieval"]["image_to_text"]["R@1"].get<double>(),
                        record["retrieval"]["text_to_image"]["R@1"].get<double>());
  impl_->progress.note(line);
}

void Trainer::announce() {
  if (rank_ != 0 || !config_.progress) return;
  int64_t total = 0, trainable = 0;
  for (const auto& p : model_->parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  auto& out = impl_->progress;
  out.note(fmt::format("kclip train: run {} (metrics.jsonl, checkpoints/)", run_dir_.string()));
  out.note(fmt::format("  data: {}", impl_->source.describe()));
  out.note(fmt::format("  {} steps per epoch of {} x {} rank{} x {} accumulation, {} epochs: {} steps{}",
                       impl_->steps_per_epoch, config_.batch_size, world_size_, world_size_ == 1 ? "" : "s",
                       config_.accum_freq, config_.epochs, impl_->total_steps,
                       step_ ? fmt::format(" (resuming after step {})", step_) : ""));
  out.note(fmt::format("  student: {} ({:.2f} M parameters, {:.2f} M trained); loss: {}", config_.model, total / 1e6,
                       trainable / 1e6, impl_->loss_description));
  out.note(fmt::format("  device: {}, {}, {} LibTorch thread{}, {} data workers", device_.str(), config_.precision,
                       num_threads(), num_threads() == 1 ? "" : "s", config_.workers ? config_.workers : available_cpus()));
}

void Trainer::report(const StepResult& r, const Batch& batch, double data_seconds, double step_seconds, double elapsed,
                     int64_t start_step) {
  if (rank_ != 0) return;
  const int64_t images = batch.images.size(0) * world_size_;
  json record = {{"type", r.skipped ? "skipped" : "train"},
                 {"step", r.step},
                 {"epoch", batch.epoch},
                 {"batch", batch.index},
                 {"lr", r.lr}};
  for (auto [key, value] : {std::pair{"loss", r.loss}, {"contrastive", r.contrastive},
                            {"distillation", r.distillation}, {"concept", r.concept}})
    if (std::isfinite(value)) record[key] = value;
  if (r.skipped) record["reason"] = impl_->last_skip_reason;
  record["logit_scale"] = r.logit_scale;
  record["grad_norm"] = r.grad_norm;
  record["images_per_s"] = images / std::max(step_seconds, 1e-9);
  record["data_wait"] = data_seconds / std::max(step_seconds, 1e-9);
  record["step_time"] = step_seconds;
  record["memory_mb"] = detail::resident_memory_mb();
  record["peak_memory_mb"] = detail::peak_memory_mb();
  record["skipped_samples"] = loader_->cursor().skipped;
  record["skipped_steps"] = skipped_steps_;
  record["time"] = elapsed;
  impl_->metrics.write(record.dump());

  const int64_t done = step_ - start_step;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(impl_->total_steps - step_) : 0;
  std::string terms;
  for (auto [key, value] : {std::pair{"c", r.contrastive}, {"d", r.distillation}, {"k", r.concept}})
    if (std::isfinite(value)) terms += fmt::format(" {} {:.3f}", key, value);
  impl_->progress.update(
      step_, impl_->total_steps,
      fmt::format("epoch {}/{} step {}/{} loss {:.4f} ({}) lr {:.2e} {:.0f} img/s data {:.0f}% ETA {:.0f}s{}",
                  batch.epoch + 1, config_.epochs, step_, impl_->total_steps, r.loss, terms.empty() ? "" : terms.substr(1),
                  r.lr, images / std::max(step_seconds, 1e-9), 100 * data_seconds / std::max(step_seconds, 1e-9), eta,
                  r.skipped ? " [skipped: " + impl_->last_skip_reason + "]" : ""),
      step_ >= impl_->total_steps);
}

}  // namespace kclip
