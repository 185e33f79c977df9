#pragma once
// Text-embedding distillation (Knowledge-CLIP's L_emb): W_e maps the student text embedding into the teacher's
// space, and the result regresses the teacher's caption embedding:  Σ_d (E_T(x)·W_e − L(x))_d².
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <utility>

namespace kclip {

struct TextDistillationLossOptions {
  TextDistillationLossOptions(int64_t student_dim, int64_t teacher_dim)
      : student_dim_(student_dim), teacher_dim_(teacher_dim) {}
  TORCH_ARG(int64_t, student_dim);
  TORCH_ARG(int64_t, teacher_dim);
  // "linear": W_e without bias, the paper's formula. "mlp": Linear → ReLU → Linear (hidden units), the authors'
  // code (512 → 64 → 4096).
  TORCH_ARG(std::string, head) = "linear";
  TORCH_ARG(int64_t, hidden) = 64;
  // "mse": squared L2 distance summed over dimensions (the paper); "cosine": 1 − cos(prediction, target).
  TORCH_ARG(std::string, kind) = "mse";
  // Over the batch: "mean" (default) or "sum" of the per-caption losses.
  TORCH_ARG(std::string, reduction) = "mean";
};

class TextDistillationLossImpl : public torch::nn::Module {
 public:
  explicit TextDistillationLossImpl(TextDistillationLossOptions options);

  // student_text: [batch, student_dim]; teacher: [batch, teacher_dim] (targets, no gradient needed).
  at::Tensor forward(const at::Tensor& student_text, const at::Tensor& teacher);

  at::Tensor project(const at::Tensor& student_text);              // E_T(x)·W_e
  at::Tensor standardize_targets(const at::Tensor& teacher) const;  // (L(x) − mean) / std

  // Raw LLM hidden states have a few huge outlier dimensions that would dominate the squared error; targets
  // are standardised with these statistics (identity until set; saved in the state dict).
  void set_target_statistics(const at::Tensor& mean, const at::Tensor& std);
  // Per-dimension mean and (population) std of [N, teacher_dim] targets, std floored at 1e-6.
  static std::pair<at::Tensor, at::Tensor> target_statistics(const at::Tensor& teacher);

  TextDistillationLossOptions options;
  torch::nn::Sequential projection{nullptr};
  at::Tensor target_mean, target_std;  // buffers [teacher_dim]
};
TORCH_MODULE(TextDistillationLoss);

}  // namespace kclip
