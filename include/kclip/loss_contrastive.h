#pragma once
// CLIP's symmetric InfoNCE with a learnable temperature, as OpenAI CLIP and open_clip's ClipLoss:
//   logits = exp(logit_scale) · normalize(image) · normalize(text)ᵀ,   loss = (CE(logits, y) + CE(logitsᵀ, y)) / 2
// with y the matching pairs. Across ranks, features are gathered (kclip/distributed.h) and labels offset by rank.
#include <kclip/distributed.h>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <utility>

namespace kclip {

struct ContrastiveLossOptions {
  TORCH_ARG(double, init_logit_scale) = std::log(1.0 / 0.07);  // CLIP's initial temperature 0.07
  TORCH_ARG(double, max_logit_scale) = std::log(100.0);        // OpenAI/open_clip clamp exp(scale) <= 100
  TORCH_ARG(bool, learn_logit_scale) = true;
  // open_clip's local_loss: this rank's rows against every rank's columns (labels offset by rank).
  TORCH_ARG(bool, local_loss) = false;
  TORCH_ARG(bool, gather_with_grad) = false;
  TORCH_ARG(ProcessGroupPtr, process_group) = {};  // none: single process
};

class ContrastiveLossImpl : public torch::nn::Module {
 public:
  explicit ContrastiveLossImpl(ContrastiveLossOptions options = {});

  // Mean symmetric cross-entropy over the (gathered) batch. Features: [batch, dim], same shape, dtype, device.
  at::Tensor forward(const at::Tensor& image_features, const at::Tensor& text_features);

  // (logits_per_image, logits_per_text) as the loss sees them on this rank.
  std::pair<at::Tensor, at::Tensor> logits(const at::Tensor& image_features, const at::Tensor& text_features);

  // Clamp the parameter into [0, max_logit_scale] in place; call after each optimiser step, as open_clip does.
  void clamp_logit_scale_();

  ContrastiveLossOptions options;
  at::Tensor logit_scale;  // scalar parameter (a buffer when not learned)
};
TORCH_MODULE(ContrastiveLoss);

}  // namespace kclip
