#include <kclip/loss_contrastive.h>

#include "core/checks.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>

namespace kclip {

namespace F = torch::nn::functional;

ContrastiveLossImpl::ContrastiveLossImpl(ContrastiveLossOptions options_) : options(std::move(options_)) {
  at::Tensor init = at::full({}, options.init_logit_scale(), at::kFloat);
  logit_scale = options.learn_logit_scale() ? register_parameter("logit_scale", init)
                                            : register_buffer("logit_scale", init);
}

std::pair<at::Tensor, at::Tensor> ContrastiveLossImpl::logits(const at::Tensor& image_features,
                                                              const at::Tensor& text_features) {
  const char* who = "ContrastiveLoss";
  detail::check_matrix(who, "image_features", image_features);
  detail::check_matrix(who, "text_features", text_features, image_features.size(1));
  detail::check_same_batch(who, "image_features", image_features, "text_features", text_features);

  const auto normalize = F::NormalizeFuncOptions().p(2).dim(1);
  at::Tensor image = F::normalize(image_features, normalize);
  at::Tensor text = F::normalize(text_features, normalize);
  // Clamped in the forward too, so the bound holds even if the caller never calls clamp_logit_scale_().
  at::Tensor scale = logit_scale.to(image.scalar_type()).clamp_max(options.max_logit_scale()).exp();

  const auto& group = options.process_group();
  at::Tensor all_image = all_gather(image, group, options.gather_with_grad());
  at::Tensor all_text = all_gather(text, group, options.gather_with_grad());
  if (options.local_loss())
    return {scale * image.matmul(all_text.t()), scale * text.matmul(all_image.t())};
  at::Tensor per_image = scale * all_image.matmul(all_text.t());
  return {per_image, per_image.t()};
}

at::Tensor ContrastiveLossImpl::forward(const at::Tensor& image_features, const at::Tensor& text_features) {
  auto [per_image, per_text] = logits(image_features, text_features);
  // Row i matches column i of the gathered batch; with local_loss, this rank's rows start at rank × batch.
  const int64_t offset = options.local_loss() ? rank_of(options.process_group()) * image_features.size(0) : 0;
  at::Tensor labels = at::arange(offset, offset + per_image.size(0), per_image.options().dtype(at::kLong));
  return (F::cross_entropy(per_image, labels) + F::cross_entropy(per_text, labels)) / 2;
}

void ContrastiveLossImpl::clamp_logit_scale_() {
  at::NoGradGuard no_grad;
  logit_scale.clamp_(0, options.max_logit_scale());
}

}  // namespace kclip
