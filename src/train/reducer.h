#pragma once
// Averaging gradients over ranks while backward still runs (private header), as DDP's reducer: the optimizer's
// flat gradient buffers are cut into buckets (from the last parameters, whose gradients come first), and a
// bucket's all-reduce starts as soon as the gradient accumulator of its last parameter has run.
#include <kclip/distributed.h>
#include <kclip/train.h>

#include <torch/csrc/autograd/function.h>

#include <memory>
#include <mutex>
#include <vector>

namespace kclip::detail {

class GradientReducer {
 public:
  GradientReducer(AdamW& optimizer, ProcessGroupPtr group, int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before each backward pass of a step: `last` for the pass whose gradients are final (the last micro-batch).
  void prepare(bool last);
  // After the last backward pass: all-reduces the buckets not started yet (parameters that got no gradient),
  // waits for every bucket and divides by the number of ranks.
  void finish();

  void mark_ready(size_t param);  // called by the hooks

 private:
  void launch_ready();

  struct Bucket {
    at::Tensor grads;  // a slice of a flat gradient buffer
    int64_t params = 0, pending = 0;
    c10::intrusive_ptr<c10d::Work> work;
  };
  ProcessGroupPtr group_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;  // accumulator, hook handle
  std::mutex mutex_;  // accumulators of CUDA tensors run on the autograd engine's device threads
  bool armed_ = false;
  size_t next_ = 0;  // the next bucket to start
};

}  // namespace kclip::detail
