#pragma once
// The CLIP student: OpenAI CLIP's ViT image tower and causal text transformer, with OpenAI's parameter names
// (visual.transformer.resblocks.N.attn.in_proj_weight, token_embedding.weight, text_projection, logit_scale, ...).
// Checked against the outputs of OpenAI's reference clip/model.py (tests/cpp/test_clip.cpp).
#include <kclip/safetensors.h>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace kclip {

// Model shape, as open_clip's model configs (configs/*.json): {"embed_dim", "quick_gelu",
// "vision_cfg": {"image_size", "layers", "width", "patch_size", "head_width"?}, "text_cfg": {"context_length",
// "vocab_size", "width", "heads", "layers"}}.
struct CLIPConfig {
  int64_t embed_dim = 512;
  int64_t image_size = 224, patch_size = 32, vision_width = 768, vision_layers = 12, vision_heads = 12;
  int64_t context_length = 77, vocab_size = 49408, text_width = 512, text_layers = 12, text_heads = 8;
  std::string activation = "quick_gelu";  // OpenAI weights use QuickGELU; "gelu" for others

  static CLIPConfig from_json(const std::filesystem::path& path);
  // A config shipped in configs/ by name ("ViT-B-32", "tiny", "bench-s", ...); KCLIP_CONFIG_DIR adds a folder.
  static CLIPConfig named(const std::string& name);
  // As OpenAI's build_model: shapes of an OpenAI-layout state dict give the config (heads = width / 64).
  static CLIPConfig infer_openai(const TensorDict& state);
  void validate(const std::string& where) const;
  // Hugging Face CLIPConfig (config.json of a CLIPModel directory), both ways.
  static CLIPConfig from_hf_json(const std::filesystem::path& path);
  std::string to_hf_json() const;
};

// OpenAI <-> Hugging Face CLIPModel state dicts (names, packed vs separate q/k/v, transposed projections).
TensorDict clip_openai_to_hf(const TensorDict& openai, const CLIPConfig& config);
TensorDict clip_hf_to_openai(const TensorDict& hf, const CLIPConfig& config,
                             const std::string& source = "Hugging Face CLIP checkpoint");

// nn.MultiheadAttention's packed parameters (in_proj_weight [3w, w], in_proj_bias, out_proj), self-attention only.
class PackedAttentionImpl : public torch::nn::Module {
 public:
  PackedAttentionImpl(int64_t width, int64_t heads);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask);  // x: [B, T, w]; mask additive [T, T] or {}
  // Attention output at one query position per sequence (int64 [B]) over all T keys: [B, w].
  at::Tensor forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions);
  // Sequences of different lengths packed back to back, x [N, w] (float32 on the CPU): [N, w].
  at::Tensor forward_packed(const at::Tensor& x, const std::vector<int64_t>& lengths, const at::Tensor& mask);
  at::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};
  int64_t heads;
};
TORCH_MODULE(PackedAttention);

class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(int64_t width, int64_t heads, const std::string& activation);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask);
  // The block's output at one position per sequence (int64 [B]): [B, T, w] -> [B, w]. Equal to
  // forward(x, mask)[b, positions[b]]; only the keys and values are computed for every position.
  at::Tensor forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions);
  at::Tensor forward_packed(const at::Tensor& x, const std::vector<int64_t>& lengths, const at::Tensor& mask);
  at::Tensor mlp(const at::Tensor& h);  // h + MLP(ln_2(h))
  PackedAttention attn{nullptr};
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};  // registered under "mlp"
  bool quick_gelu;
};
TORCH_MODULE(ResidualAttentionBlock);

class CLIPTransformerImpl : public torch::nn::Module {
 public:
  CLIPTransformerImpl(int64_t width, int64_t layers, int64_t heads, const std::string& activation);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask = {});
  // The output at one position per sequence (int64 [B]): [B, T, w] -> [B, w], equal to
  // forward(x, mask)[b, positions[b]]. The towers pool one token (CLS, end-of-text), so the last block computes
  // only that token's query, attention and MLP: ~10/12 of that block's matrix work is skipped, forward and backward.
  at::Tensor forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions);
  // forward_at for sequences of different lengths packed back to back (x [N, w], float32 on the CPU, no
  // checkpointing): all blocks but the last see only each sequence's own rows, no padding; `rows` [N] are the
  // rows' places in the padded [B, T] layout, where the last block runs at `positions` (as forward_at).
  at::Tensor forward_packed_at(const at::Tensor& x, const std::vector<int64_t>& lengths, const at::Tensor& mask,
                               const at::Tensor& rows, int64_t padded_length, const at::Tensor& positions);
  torch::nn::ModuleList resblocks{nullptr};
  // When training, keep only each block's input and recompute the block in backward (open_clip's
  // set_grad_checkpointing; torch.utils.checkpoint's reentrant form: gradients reach the parameters through
  // loss.backward(), not through torch::autograd::grad on the parameters).
  bool grad_checkpointing = false;
};
TORCH_MODULE(CLIPTransformer);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const CLIPConfig& config);
  at::Tensor forward(const at::Tensor& pixels);  // [B, 3, H, W] -> [B, embed_dim]
  torch::nn::Conv2d conv1{nullptr};
  at::Tensor class_embedding, positional_embedding, proj;
  torch::nn::LayerNorm ln_pre{nullptr}, ln_post{nullptr};
  CLIPTransformer transformer{nullptr};
};
TORCH_MODULE(VisionTransformer);

class CLIPImpl : public torch::nn::Module {
 public:
  explicit CLIPImpl(CLIPConfig config);

  // Inputs move to the model's device. Under autocast (torch.autocast in Python, at::autocast in C++) matmuls run
  // in the autocast dtype (bf16 on CUDA) while LayerNorms compute in float32, as in OpenAI's model.
  at::Tensor encode_image(const at::Tensor& pixels);  // [B, 3, S, S] -> [B, embed_dim], not normalised
  at::Tensor encode_text(const at::Tensor& ids);      // int64 [B, context_length] -> [B, embed_dim]
  // (logits_per_image, logits_per_text) = exp(logit_scale) · normalised image · normalised textᵀ (and transpose).
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& pixels, const at::Tensor& ids);

  // An OpenAI-layout safetensors file (config inferred from shapes unless given), or a Hugging Face CLIPModel
  // directory (config.json + model.safetensors: separate q/k/v, transposed projections; F32/F16/BF16).
  // Missing, unexpected or misshaped tensors are one kclip::Error listing them.
  static std::shared_ptr<CLIPImpl> load(const std::filesystem::path& path, const CLIPConfig* config = nullptr);
  // layout "openai": one safetensors file at `path`; "hf": a directory `path` with config.json + model.safetensors
  // that Hugging Face's CLIPModel loads.
  void save(const std::filesystem::path& path, const std::string& layout = "openai");
  void load_weights(const TensorDict& state, const std::string& source);
  // Activation checkpointing of both towers' blocks: less memory for one more forward in backward.
  void set_grad_checkpointing(bool enable = true);

  const CLIPConfig& config() const { return config_; }
  VisionTransformer visual{nullptr};
  torch::nn::Embedding token_embedding{nullptr};
  at::Tensor positional_embedding, text_projection, logit_scale;
  CLIPTransformer transformer{nullptr};
  torch::nn::LayerNorm ln_final{nullptr};

 private:
  CLIPConfig config_;
  at::Tensor causal_mask_;  // [context, context], −inf above the diagonal
};
TORCH_MODULE(CLIP);

}  // namespace kclip
