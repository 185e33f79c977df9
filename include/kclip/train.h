#pragma once
// The Knowledge-CLIP trainer: a CLIP student, the loss L = α·L_emb + β·L_concept + γ·L_contrastive, AdamW with
// open_clip's parameter groups and learning-rate schedules, data-parallel training on c10d (Gloo on CPU, NCCL on
// CUDA), atomic checkpoints that resume bit for bit, and per-step metrics as JSON lines.
//
// A run directory (open_clip's layout):
//   LOGS/NAME/config.json                      the resolved TrainConfig
//   LOGS/NAME/metrics.jsonl                    one JSON record per step (and per evaluation)
//   LOGS/NAME/checkpoints/step_00000100/       model.safetensors (the student, OpenAI layout), loss.safetensors,
//                                              optimizer.safetensors, trainer_state.json
#include <kclip/clip.h>
#include <kclip/data.h>
#include <kclip/distributed.h>
#include <kclip/loss_knowledge_clip.h>

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kclip {

// Every option of `kclip train`. The CLI flag of a field is its name with '-' for '_' (`batch_size` is
// `--batch-size`); a JSON config file uses the field names. Defaults follow open_clip where it has the option.
struct TrainConfig {
  // data
  std::string train_data;                  // .csv/.tsv, tar shards (brace list), image folder, fashion-mnist, mnist
  std::string dataset_type = "auto";       // auto | csv | webdataset | imagefolder | idx
  std::string csv_img_key = "filepath";
  std::string csv_caption_key = "title";
  std::string csv_separator;               // empty: ',' for .csv, tab otherwise
  std::string templates = "simple";        // captions of class-labelled data: openai-cifar10 | openai-imagenet | simple | FILE
  std::string bad_samples = "skip";        // unreadable images and malformed CSV records: skip (counted) | error
  int64_t workers = 0;                     // decoding threads (0: the CPUs this process may use)
  bool no_aug = false;                     // no RandomResizedCrop: resize + center crop as in evaluation
  std::string aug_scale = "0.9,1.0";       // RandomResizedCrop's area range (open_clip's default)
  // model
  std::string model = "tiny";              // config name (configs/*.json), CONFIG.json, or a checkpoint (OpenAI file / HF dir)
  std::string tokenizer;                   // CLIP BPE vocabulary (default: kclip's cache)
  bool lock_image = false;                 // freeze the image tower (open_clip's --lock-image)
  bool lock_text = false;                  // freeze the text tower (open_clip's --lock-text)
  bool grad_checkpointing = false;
  // teacher targets and the loss
  std::string teacher_cache;               // an EmbeddingCache directory (needed when alpha or beta > 0)
  std::string concepts;                    // a KMeans artifact over the cache (needed when beta > 0)
  double concept_temperature = 0.05;
  int64_t concept_top_k = 0;
  double alpha = 1.0, beta = 0.01, gamma = 1.0;
  std::string distill_head = "linear";     // linear | mlp
  int64_t distill_hidden = 64;
  std::string distill_kind = "mse";        // mse | cosine
  bool standardize_targets = true;         // distil (L(x) − mean) / std of the cache's embeddings
  std::string concept_mode = "per_modality";  // per_modality | concat
  int64_t concept_hidden = 64;
  int64_t teacher_dim = 0;                 // without a cache (custom loops): the teacher's dimension
  int64_t num_concepts = 0;                // without a concepts file (custom loops): K
  // optimisation
  int64_t batch_size = 64;                 // per rank (and per accumulation step)
  int64_t epochs = 32;
  int64_t max_steps = 0;                   // > 0: stop after this many optimizer steps
  int64_t accum_freq = 1;                  // open_clip's --accum-freq: the contrastive loss spans accum_freq batches
  double lr = 5e-4, wd = 0.2, beta1 = 0.9, beta2 = 0.98, eps = 1e-6;
  int64_t warmup = 10000;                  // linear warm-up steps
  std::string lr_scheduler = "cosine";     // cosine | const
  double grad_clip_norm = 0.0;             // > 0: clip the global gradient norm
  std::string precision = "fp32";          // fp32 | amp_bf16 (autocast to bfloat16)
  std::string device;                      // empty: cuda:LOCAL_RANK when CUDA is available, else cpu
  uint64_t seed = 0;
  std::string nonfinite = "error";         // a NaN/Inf loss or gradient: error (stop) | skip (the step, counted)
  // run
  std::string logs = "./logs";
  std::string name;                        // empty: a timestamp and the model
  int64_t save_frequency = 1;              // checkpoint every N epochs (0: only at the end)
  int64_t save_every_n_steps = 0;          // > 0: also every N steps
  int64_t keep = 3;                        // checkpoints kept (older ones are deleted; 0 keeps all)
  std::string resume;                      // "latest" or a checkpoint directory
  int64_t log_every_n_steps = 10;          // progress lines when stderr is not a terminal
  bool progress = true;
  double dist_timeout = 1800;              // seconds a collective may wait for another rank
  // evaluation during training (rank 0; records {"type": "eval", ...} in metrics.jsonl)
  int64_t eval_every_n_steps = 0;          // > 0: evaluate every N steps and at the end
  std::string val_zeroshot;                // zero-shot data: an image folder, fashion-mnist, mnist
  std::string val_templates = "openai-imagenet";
  std::string val_retrieval;               // a pairs CSV (columns as csv_img_key / csv_caption_key)

  // JSON (field names as keys; '-' may stand for '_'). Unknown keys and mistyped values are errors naming them.
  static TrainConfig from_json_file(const std::filesystem::path& path);
  static TrainConfig from_json(const std::string& text, const std::string& where = "config");
  std::string to_json() const;
  // One field from text (CLI) or JSON text; get() returns the field as JSON text.
  void set(const std::string& key, const std::string& value);
  void set_json(const std::string& key, const std::string& json_value);
  std::string get(const std::string& key) const;
  static std::vector<std::string> keys();
  static bool is_flag(const std::string& key);  // a bool option
  static std::string help();                    // every option, its default and meaning
  void validate() const;                        // ValueError naming the first bad field
};

// The loss a config trains (weights, heads, concept mode) for a student of embed_dim; a term of weight 0 needs
// no dimension.
KnowledgeClipLossOptions knowledge_clip_loss_options(const TrainConfig& config, int64_t embed_dim, int64_t teacher_dim,
                                                     int64_t num_concepts);

// open_clip's schedules: linear warm-up to `lr` over `warmup` steps, then cosine decay to 0 at `total` steps
// ("cosine") or constant ("const"). step counts optimizer steps from 0.
double learning_rate_at(const TrainConfig& config, int64_t step, int64_t total_steps);

// AdamW over parameters kept in one contiguous buffer per group (and their gradients in another): the update is
// one pass over each buffer, gradient norms and all-reduces one call each. Constructing it moves every parameter
// into its group's buffer (values unchanged, same tensors): move the modules to their device first.
class AdamW {
 public:
  struct Group {
    std::vector<std::pair<std::string, at::Tensor>> params;  // named leaf tensors that require grad
    double weight_decay = 0;
  };
  AdamW(std::vector<Group> groups, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);

  // One update at learning rate `lr`, as torch.optim.AdamW: p ← p·(1 − lr·wd), then the Adam step.
  void step(double lr);
  void zero_grad();  // zeroes the gradient buffers (the parameters' .grad stay views of them)
  // The gradient buffers (one per group) and the parameter buffers.
  const std::vector<at::Tensor>& grads() const { return grads_; }
  const std::vector<at::Tensor>& buffers() const { return flat_; }
  double grad_norm();                   // global L2 norm of all gradients
  void scale_grads(double factor);
  std::string first_nonfinite_grad();  // name of a parameter with a NaN/Inf gradient, "" if none
  // Puts back into the buffer a .grad a caller set to None or replaced (step() and zero_grad() do it too).
  void sync_grads();
  int64_t steps() const { return steps_; }
  int64_t num_groups() const { return static_cast<int64_t>(groups_.size()); }
  const Group& group(int64_t i) const { return groups_.at(static_cast<size_t>(i)); }
  double last_lr() const { return last_lr_; }

  // exp_avg / exp_avg_sq per group, step count and the parameter names (checked on load).
  TensorDict state_dict() const;
  Metadata state_metadata() const;
  void load_state_dict(const TensorDict& state, const Metadata& metadata, const std::string& source);

 private:
  std::vector<Group> groups_;
  std::vector<at::Tensor> flat_, grads_, exp_avg_, exp_avg_sq_;
  double beta1_, beta2_, eps_;
  int64_t steps_ = 0;
  double last_lr_ = 0;
};

// What one optimizer step did: each loss term (weighted total in `loss`; NaN for terms not computed), the
// learning rate used, the gradient norm before clipping, and whether the step was skipped (non-finite).
struct StepResult {
  double loss = 0, contrastive = 0, distillation = 0, concept = 0;
  double lr = 0, grad_norm = 0, logit_scale = 0;
  bool skipped = false;
  int64_t step = 0;  // optimizer steps completed after this one
};

class Trainer {
 public:
  // group: the ranks to train with; none: from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
  // MASTER_PORT) when WORLD_SIZE > 1, else a single process.
  explicit Trainer(TrainConfig config, ProcessGroupPtr group = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains on config.train_data until `epochs` or `max_steps`, resuming first if config.resume says so;
  // checkpoints and metrics as configured. Returns the last step's result.
  StepResult fit();
  // One optimizer step on a batch (per rank): images [B, 3, S, S], text ids [B, context], teacher [B, D] and
  // concept labels [B, K] (or [B] ids) when the loss needs them. With accum_freq > 1 the batch is split into
  // accum_freq micro-batches whose features are shared by the loss, as open_clip.
  StepResult train_step(const at::Tensor& images, const at::Tensor& text, const at::Tensor& teacher = {},
                        const at::Tensor& concepts = {});

  // Writes LOGS/NAME/checkpoints/step_<step>/ atomically (rank 0; every rank must call it) and prunes old ones.
  std::filesystem::path save_checkpoint();
  // "latest" (the newest complete checkpoint of this run; none: nothing happens, returns false) or a directory.
  bool resume(const std::string& checkpoint = "latest");

  CLIP& model() { return model_; }
  KnowledgeClipLoss& loss() { return loss_; }
  AdamW& optimizer() { return *optimizer_; }
  DataLoader* loader() { return loader_.get(); }  // null until fit() (or without train_data)
  const TrainConfig& config() const { return config_; }
  int64_t step() const { return step_; }
  int64_t epoch() const;
  int64_t total_steps() const;  // the schedule's length
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::filesystem::path& run_dir() const { return run_dir_; }
  std::filesystem::path checkpoint_dir() const { return run_dir_ / "checkpoints"; }
  const c10::Device& device() const { return device_; }
  int64_t skipped_steps() const { return skipped_steps_; }

  // A JSON record appended to metrics.jsonl by rank 0 (e.g. an evaluation).
  void log_metrics(const std::string& json_object);

  // Called after every step of fit(), checkpoint included (e.g. an evaluation every N steps); an exception it
  // throws stops fit().
  std::function<void(const StepResult&)> on_step;

 private:
  void load_targets();
  void build_loss();
  void freeze_and_group();
  void name_run();
  void build_data();
  void open_run_dir();
  StepResult run_loop();
  bool check_terms(const KnowledgeClipLossOutput& out, const at::Tensor& teacher);
  void backward(const at::Tensor& loss, bool last_pass);
  std::pair<at::Tensor, at::Tensor> encode(const at::Tensor& images, const at::Tensor& text);
  StepResult finish_step(const KnowledgeClipLossOutput& out, bool skip);
  void announce();
  void evaluate_now();
  void report(const StepResult& result, const Batch& batch, double data_seconds, double step_seconds, double elapsed,
              int64_t start_step);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  TrainConfig config_;
  CLIP model_{nullptr};
  KnowledgeClipLoss loss_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<DataLoader> loader_;
  ProcessGroupPtr group_;
  int rank_ = 0, world_size_ = 1;
  c10::Device device_{c10::kCPU};
  std::filesystem::path run_dir_;
  int64_t step_ = 0, skipped_steps_ = 0;
};

// The newest complete checkpoint directory under `checkpoints`, "" if none.
std::filesystem::path latest_checkpoint(const std::filesystem::path& checkpoints);

// The loss modules of a trainer checkpoint directory (its concept heads, W_e, logit scale), built from the run's
// config and the given dimensions and loaded from its loss.safetensors (a mismatch is one error listing it).
KnowledgeClipLoss load_training_loss(const std::filesystem::path& checkpoint, int64_t embed_dim, int64_t teacher_dim,
                                     int64_t num_concepts);

}  // namespace kclip
