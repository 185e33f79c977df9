#pragma once
// Concept learning (Knowledge-CLIP's L_concept): classifier heads predict each pair's soft concept label (from
// K-means over teacher caption embeddings), trained with soft cross-entropy −Σ_k s_k · log softmax(z)_k.
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

namespace kclip {

struct ConceptLossOptions {
  ConceptLossOptions(int64_t embed_dim, int64_t num_concepts) : embed_dim_(embed_dim), num_concepts_(num_concepts) {}
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_concepts);
  // "per_modality": a head on the image embedding and one on the text embedding, losses averaged.
  // "concat": one head on concat[text, image] (the authors' code).
  TORCH_ARG(std::string, mode) = "per_modality";
  TORCH_ARG(int64_t, hidden) = 64;  // each head: Linear(in, hidden) → ReLU → Linear(hidden, num_concepts)
};

class ConceptLossImpl : public torch::nn::Module {
 public:
  explicit ConceptLossImpl(ConceptLossOptions options);

  // labels: soft [batch, num_concepts] (rows are probability distributions) or hard class ids int64 [batch].
  at::Tensor forward(const at::Tensor& image_embed, const at::Tensor& text_embed, const at::Tensor& labels);

  // Head outputs: {image_logits, text_logits} per modality, {concat_logits} for "concat".
  std::vector<at::Tensor> logits(const at::Tensor& image_embed, const at::Tensor& text_embed);

  ConceptLossOptions options;
  torch::nn::Sequential image_head{nullptr}, text_head{nullptr}, concat_head{nullptr};
};
TORCH_MODULE(ConceptLoss);

// Soft cross-entropy, mean over the batch; hard int64 labels are class ids. Validates the labels.
at::Tensor soft_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, const char* who = "soft_cross_entropy");

}  // namespace kclip
