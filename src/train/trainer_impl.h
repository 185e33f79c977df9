#pragma once
// The trainer's private state (private header), shared by trainer.cpp and checkpoint.cpp.
#include <kclip/train.h>

#include "core/file_lock.h"
#include "train/metrics.h"
#include "train/reducer.h"

#include <array>
#include <memory>
#include <string>

namespace kclip {

struct Trainer::Impl {
  std::shared_ptr<ClipTokenizer> tokenizer;
  std::shared_ptr<const EmbeddingCache> cache;
  std::shared_ptr<const KMeans> concepts;
  DataSource source;
  int64_t steps_per_epoch = 0, total_steps = 0;
  bool autocast = false;
  std::string loss_description;

  bool run_dir_ready = false;
  detail::DirectoryLock lock;  // LOGS/NAME/.lock, held by rank 0 while the trainer lives
  detail::MetricsLog metrics;
  detail::ProgressDisplay progress;

  std::unique_ptr<detail::GradientReducer> reducer;  // with more than one rank
  int64_t loss_grad_divisor = 1;  // accumulation: the loss modules' gradients were summed over micro-batches

  StepResult last_result;  // the last step's figures, kept in checkpoints
  std::array<double, 4> term_means{};  // total, contrastive, distillation, concept of the last step, over ranks
  std::string last_skip_reason;
  int64_t last_saved_step = -1;
  int64_t last_evaluated_step = -1;
  std::shared_ptr<const Dataset> val_zeroshot;  // opened at the first evaluation

  ~Impl();
};

}  // namespace kclip
