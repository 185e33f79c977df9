// GradientReducer: bucketed all-reduce of the flat gradient buffers, started from gradient-accumulator post-hooks.
#include "train/reducer.h"

#include <kclip/error.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/variable.h>

namespace kclip::detail {
namespace {

// Runs after a parameter's AccumulateGrad, when its .grad (a view of the flat buffer) holds this pass's sum.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradientReducer* reducer, size_t param) : reducer_(reducer), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    reducer_->mark_ready(param_);
    return outputs;
  }

 private:
  GradientReducer* reducer_;
  size_t param_;
};

}  // namespace

GradientReducer::GradientReducer(AdamW& optimizer, ProcessGroupPtr group, int64_t bucket_bytes) : group_(std::move(group)) {
  for (int64_t g = 0; g < optimizer.num_groups(); ++g) {
    const auto& params = optimizer.group(g).params;
    const at::Tensor& flat = optimizer.grads()[static_cast<size_t>(g)];
    std::vector<int64_t> offset(params.size() + 1, 0);
    for (size_t i = 0; i < params.size(); ++i) offset[i + 1] = offset[i] + params[i].second.numel();
    // From the end of the buffer: backward produces the last layers' gradients first.
    int64_t end = flat.numel(), bytes = 0;
    Bucket bucket;
    for (size_t i = params.size(); i-- > 0;) {
      const at::Tensor& p = params[i].second;
      const size_t index = bucket_of_.size();
      bucket_of_.push_back(buckets_.size());
      ++bucket.params;
      bytes += p.numel() * static_cast<int64_t>(p.element_size());
      auto accumulator = torch::autograd::impl::grad_accumulator(p);
      hooks_.emplace_back(accumulator, accumulator->add_post_hook(std::make_unique<ReadyHook>(this, index)));
      const int64_t begin = offset[i];
      if (bytes >= bucket_bytes || i == 0) {
        bucket.grads = flat.narrow(0, begin, end - begin);
        buckets_.push_back(std::move(bucket));
        bucket = Bucket{};
        end = begin;
        bytes = 0;
      }
    }
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [accumulator, handle] : hooks_) accumulator->del_post_hook(handle);
}

void GradientReducer::prepare(bool last) {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = last;
  next_ = 0;
  for (auto& b : buckets_) {
    b.pending = b.params;
    b.work.reset();
  }
}

// Buckets start in their fixed order on every rank (collectives pair up by order), each once all its parameters
// are ready and the buckets before it have started.
void GradientReducer::launch_ready() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    std::vector<at::Tensor> tensors{buckets_[next_].grads};
    buckets_[next_++].work = group_->allreduce(tensors);
  }
}

void GradientReducer::mark_ready(size_t param) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  --buckets_[bucket_of_[param]].pending;
  launch_ready();
}

void GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& b : buckets_) b.pending = 0;  // parameters that took no part in this step: their gradients are zero
  launch_ready();
  const double world = world_size_of(group_);
  for (auto& b : buckets_) {
    b.work->wait();
    b.grads.div_(world);
  }
  armed_ = false;
}

}  // namespace kclip::detail
