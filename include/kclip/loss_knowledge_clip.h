#pragma once
// The Knowledge-CLIP objective  L = α·L_emb + β·L_concept + γ·L_contrastive  (paper: α = γ = 1, β = 0.01).
// A term whose weight is 0 is skipped entirely: its module is not built and its inputs are not needed (γ-only
// training needs no teacher).
#include <kclip/loss_concept.h>
#include <kclip/loss_contrastive.h>
#include <kclip/loss_distillation.h>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace kclip {

struct KnowledgeClipLossOptions {
  // teacher_dim and num_concepts may be 0 when their term's weight is 0.
  KnowledgeClipLossOptions(int64_t embed_dim, int64_t teacher_dim, int64_t num_concepts)
      : embed_dim_(embed_dim), teacher_dim_(teacher_dim), num_concepts_(num_concepts) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, teacher_dim);
  TORCH_ARG(int64_t, num_concepts);
  TORCH_ARG(double, alpha) = 1.0;   // text-embedding distillation
  TORCH_ARG(double, beta) = 0.01;   // concept learning
  TORCH_ARG(double, gamma) = 1.0;   // contrastive
  TORCH_ARG(std::string, distill_head) = "linear";
  TORCH_ARG(int64_t, distill_hidden) = 64;
  TORCH_ARG(std::string, distill_kind) = "mse";
  TORCH_ARG(std::string, concept_mode) = "per_modality";
  TORCH_ARG(int64_t, concept_hidden) = 64;
  TORCH_ARG(ContrastiveLossOptions, contrastive) = {};
};

// Each term before weighting; a skipped term is an undefined tensor.
struct KnowledgeClipLossOutput {
  at::Tensor total, contrastive, distillation, concept;
};

class KnowledgeClipLossImpl : public torch::nn::Module {
 public:
  explicit KnowledgeClipLossImpl(KnowledgeClipLossOptions options);

  // teacher: [batch, teacher_dim] (needed when alpha != 0); concept_labels: soft [batch, K] or ids [batch]
  // (needed when beta != 0).
  KnowledgeClipLossOutput forward(const at::Tensor& image_features, const at::Tensor& text_features,
                                  const at::Tensor& teacher = {}, const at::Tensor& concept_labels = {});

  KnowledgeClipLossOptions options;
  ContrastiveLoss contrastive{nullptr};
  TextDistillationLoss distillation{nullptr};
  ConceptLoss concept{nullptr};
};
TORCH_MODULE(KnowledgeClipLoss);

}  // namespace kclip
