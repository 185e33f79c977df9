#include <kclip/loss_distillation.h>

#include "core/checks.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/distance.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

namespace kclip {

TextDistillationLossImpl::TextDistillationLossImpl(TextDistillationLossOptions options_) : options(std::move(options_)) {
  const char* who = "TextDistillationLoss";
  if (options.student_dim() < 1 || options.teacher_dim() < 1)
    fail_value("{}: student_dim={} and teacher_dim={} must be positive", who, options.student_dim(),
               options.teacher_dim());
  if (options.kind() != "mse" && options.kind() != "cosine")
    fail_value("{}: kind='{}': expected 'mse' or 'cosine'", who, options.kind());
  if (options.reduction() != "mean" && options.reduction() != "sum")
    fail_value("{}: reduction='{}': expected 'mean' or 'sum'", who, options.reduction());

  namespace nn = torch::nn;
  if (options.head() == "linear") {
    projection = nn::Sequential(nn::Linear(nn::LinearOptions(options.student_dim(), options.teacher_dim()).bias(false)));
  } else if (options.head() == "mlp") {
    if (options.hidden() < 1) fail_value("{}: hidden={} must be positive", who, options.hidden());
    projection = nn::Sequential(nn::Linear(options.student_dim(), options.hidden()), nn::ReLU(),
                                nn::Linear(options.hidden(), options.teacher_dim()));
  } else {
    fail_value("{}: head='{}': expected 'linear' or 'mlp'", who, options.head());
  }
  register_module("projection", projection);
  target_mean = register_buffer("target_mean", at::zeros({options.teacher_dim()}));
  target_std = register_buffer("target_std", at::ones({options.teacher_dim()}));
}

at::Tensor TextDistillationLossImpl::project(const at::Tensor& student_text) {
  detail::check_matrix("TextDistillationLoss", "student_text", student_text, options.student_dim());
  return projection->forward(student_text);
}

at::Tensor TextDistillationLossImpl::standardize_targets(const at::Tensor& teacher) const {
  return (teacher - target_mean.to(teacher.scalar_type())) / target_std.to(teacher.scalar_type());
}

at::Tensor TextDistillationLossImpl::forward(const at::Tensor& student_text, const at::Tensor& teacher) {
  const char* who = "TextDistillationLoss";
  detail::check_matrix(who, "teacher", teacher, options.teacher_dim());
  at::Tensor prediction = project(student_text);
  detail::check_same_batch(who, "student_text", student_text, "teacher", teacher);
  at::Tensor target = standardize_targets(teacher.detach());

  at::Tensor per_caption;
  if (options.kind() == "mse") {
    per_caption = (prediction - target).pow(2).sum(1);
  } else {
    namespace F = torch::nn::functional;
    per_caption = 1 - F::cosine_similarity(prediction, target, F::CosineSimilarityFuncOptions().dim(1));
  }
  return options.reduction() == "mean" ? per_caption.mean() : per_caption.sum();
}

void TextDistillationLossImpl::set_target_statistics(const at::Tensor& mean, const at::Tensor& std) {
  const char* who = "TextDistillationLoss.set_target_statistics";
  const int64_t d = options.teacher_dim();
  if (!mean.defined() || mean.dim() != 1 || mean.size(0) != d)
    fail_value("{}: mean has shape {}: expected [{}]", who, mean.defined() ? detail::shape_of(mean) : "undefined", d);
  if (!std.defined() || std.dim() != 1 || std.size(0) != d)
    fail_value("{}: std has shape {}: expected [{}]", who, std.defined() ? detail::shape_of(std) : "undefined", d);
  if (!at::isfinite(mean).all().item<bool>() || !(at::isfinite(std) & (std > 0)).all().item<bool>())
    fail_value("{}: mean must be finite and std finite and positive", who);
  at::NoGradGuard no_grad;
  target_mean.copy_(mean);
  target_std.copy_(std);
}

std::pair<at::Tensor, at::Tensor> TextDistillationLossImpl::target_statistics(const at::Tensor& teacher) {
  detail::check_matrix("TextDistillationLoss.target_statistics", "teacher", teacher);
  at::Tensor t = teacher.detach().to(at::kFloat);
  return {t.mean(0), t.std(0, /*unbiased=*/false).clamp_min(1e-6)};
}

}  // namespace kclip
