#include <kclip/loss_knowledge_clip.h>

#include "core/checks.h"

namespace kclip {

KnowledgeClipLossImpl::KnowledgeClipLossImpl(KnowledgeClipLossOptions options_) : options(std::move(options_)) {
  const char* who = "KnowledgeClipLoss";
  for (double w : {options.alpha(), options.beta(), options.gamma()})
    if (!(w >= 0) || !std::isfinite(w))
      fail_value("{}: alpha={}, beta={}, gamma={}: weights must be finite and >= 0", who, options.alpha(),
                 options.beta(), options.gamma());
  if (options.gamma() != 0) contrastive = register_module("contrastive", ContrastiveLoss(options.contrastive()));
  if (options.alpha() != 0)
    distillation = register_module("distillation", TextDistillationLoss(TextDistillationLossOptions(
                                                                            options.embed_dim(), options.teacher_dim())
                                                                            .head(options.distill_head())
                                                                            .hidden(options.distill_hidden())
                                                                            .kind(options.distill_kind())));
  if (options.beta() != 0)
    concept = register_module("concept", ConceptLoss(ConceptLossOptions(options.embed_dim(), options.num_concepts())
                                                         .mode(options.concept_mode())
                                                         .hidden(options.concept_hidden())));
}

KnowledgeClipLossOutput KnowledgeClipLossImpl::forward(const at::Tensor& image_features, const at::Tensor& text_features,
                                                       const at::Tensor& teacher, const at::Tensor& concept_labels) {
  const char* who = "KnowledgeClipLoss";
  KnowledgeClipLossOutput out;
  std::vector<at::Tensor> weighted;
  if (contrastive) {
    out.contrastive = contrastive->forward(image_features, text_features);
    weighted.push_back(options.gamma() * out.contrastive);
  }
  if (distillation) {
    if (!teacher.defined()) fail_value("{}: alpha={} needs teacher embeddings", who, options.alpha());
    out.distillation = distillation->forward(text_features, teacher);
    weighted.push_back(options.alpha() * out.distillation);
  }
  if (concept) {
    if (!concept_labels.defined()) fail_value("{}: beta={} needs concept labels", who, options.beta());
    out.concept = concept->forward(image_features, text_features, concept_labels);
    weighted.push_back(options.beta() * out.concept);
  }
  if (weighted.empty()) fail_value("{}: alpha, beta and gamma are all 0: nothing to compute", who);
  out.total = weighted[0];
  for (std::size_t i = 1; i < weighted.size(); ++i) out.total = out.total + weighted[i];
  return out;
}

}  // namespace kclip
