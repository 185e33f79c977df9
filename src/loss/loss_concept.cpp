#include <kclip/loss_concept.h>

#include "core/checks.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

namespace kclip {

namespace {

torch::nn::Sequential make_head(int64_t in, int64_t hidden, int64_t classes) {
  namespace nn = torch::nn;
  return nn::Sequential(nn::Linear(in, hidden), nn::ReLU(), nn::Linear(hidden, classes));
}

// Soft labels must be distributions: finite, non-negative, rows summing to 1 (to the label dtype's precision).
void check_soft_labels(const char* who, const at::Tensor& labels) {
  const double tolerance = at::elementSize(labels.scalar_type()) >= 4 ? 1e-4 : 1e-2;
  at::Tensor l = labels.detach().to(at::kDouble);
  if (!at::isfinite(l).all().item<bool>()) fail_value("{}: soft labels contain NaN or infinity", who);
  if ((l < -tolerance).any().item<bool>()) fail_value("{}: soft labels contain negative values", who);
  at::Tensor sums = l.sum(1);
  at::Tensor bad = ((sums - 1).abs() > tolerance).nonzero();
  if (bad.numel() > 0) {
    const int64_t row = bad[0][0].item<int64_t>();
    fail_value("{}: soft label row {} sums to {:.6g}: expected a probability distribution summing to 1", who, row,
               sums[row].item<double>());
  }
}

}  // namespace

at::Tensor soft_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, const char* who) {
  const int64_t classes = logits.size(1);
  at::Tensor log_probs = at::log_softmax(logits, 1);
  if (!labels.defined()) fail_value("{}: labels are missing", who);
  if (labels.scalar_type() == at::kLong) {
    if (labels.dim() != 1 || labels.size(0) != logits.size(0))
      fail_value("{}: class ids have shape {}: expected [{}]", who, detail::shape_of(labels), logits.size(0));
    if (labels.numel() > 0 && (labels.min().item<int64_t>() < 0 || labels.max().item<int64_t>() >= classes))
      fail_value("{}: class ids must lie in [0, {})", who, classes);
    return -log_probs.gather(1, labels.unsqueeze(1)).mean();
  }
  if (!at::isFloatingType(labels.scalar_type()))
    fail_value("{}: labels have dtype {}: expected soft labels (floating) or class ids (int64)", who,
               c10::toString(labels.scalar_type()));
  if (labels.dim() != 2 || labels.size(0) != logits.size(0) || labels.size(1) != classes)
    fail_value("{}: soft labels have shape {}: expected [{}, {}]", who, detail::shape_of(labels), logits.size(0),
               classes);
  check_soft_labels(who, labels);
  return -(labels.to(log_probs.scalar_type()) * log_probs).sum(1).mean();
}

ConceptLossImpl::ConceptLossImpl(ConceptLossOptions options_) : options(std::move(options_)) {
  const char* who = "ConceptLoss";
  if (options.embed_dim() < 1 || options.num_concepts() < 2 || options.hidden() < 1)
    fail_value("{}: embed_dim={}, num_concepts={}, hidden={}: expected positive sizes and at least 2 concepts", who,
               options.embed_dim(), options.num_concepts(), options.hidden());
  if (options.mode() == "per_modality") {
    image_head = register_module("image_head", make_head(options.embed_dim(), options.hidden(), options.num_concepts()));
    text_head = register_module("text_head", make_head(options.embed_dim(), options.hidden(), options.num_concepts()));
  } else if (options.mode() == "concat") {
    concat_head =
        register_module("concat_head", make_head(2 * options.embed_dim(), options.hidden(), options.num_concepts()));
  } else {
    fail_value("{}: mode='{}': expected 'per_modality' or 'concat'", who, options.mode());
  }
}

std::vector<at::Tensor> ConceptLossImpl::logits(const at::Tensor& image_embed, const at::Tensor& text_embed) {
  const char* who = "ConceptLoss";
  detail::check_matrix(who, "image_embed", image_embed, options.embed_dim());
  detail::check_matrix(who, "text_embed", text_embed, options.embed_dim());
  detail::check_same_batch(who, "image_embed", image_embed, "text_embed", text_embed);
  if (options.mode() == "concat") return {concat_head->forward(at::cat({text_embed, image_embed}, 1))};
  return {image_head->forward(image_embed), text_head->forward(text_embed)};
}

at::Tensor ConceptLossImpl::forward(const at::Tensor& image_embed, const at::Tensor& text_embed,
                                    const at::Tensor& labels) {
  std::vector<at::Tensor> heads = logits(image_embed, text_embed);
  at::Tensor total = soft_cross_entropy(heads[0], labels, "ConceptLoss");
  for (std::size_t i = 1; i < heads.size(); ++i) total = total + soft_cross_entropy(heads[i], labels, "ConceptLoss");
  return total / static_cast<double>(heads.size());
}

}  // namespace kclip
