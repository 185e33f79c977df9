#pragma once
// The Llama architecture (the Knowledge-CLIP teacher) as a torch::nn module, with Hugging Face's parameter names
// (model.layers.N.self_attn.q_proj.weight, ...) and rotate-half rotary embeddings, loadable from a Hugging Face
// directory (config.json + safetensors shards) or a llama2.c checkpoint (.bin).
//
// The forward is a batched prefill over right-padded sequences with a causal + padding mask; no KV cache is
// needed for embeddings. Checked against llama2.c's run.c (tests/cpp/test_llama.cpp).
#include <kclip/safetensors.h>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <filesystem>
#include <optional>
#include <string>

namespace kclip {

struct LlamaConfig {
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // < num_attention_heads: grouped-query attention
  int64_t vocab_size = 32000;
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double rope_scaling_factor = 1.0;  // rope_scaling {"type": "linear", "factor": f}: positions divided by f
  bool tie_word_embeddings = false;
  std::string torch_dtype;  // the checkpoint's dtype as config.json names it ("float16", "bfloat16", ...), if given

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // Reads a Hugging Face config.json; kclip::Error names the file and the field that is missing or wrong.
  static LlamaConfig from_json(const std::filesystem::path& path);
  void validate(const std::string& where) const;
};

// x · rsqrt(mean(x²) + eps) · weight, computed in float32 whatever the input dtype (as Hugging Face does).
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config);
  // x: [B, T, hidden]; cos/sin: [T, head_dim]; mask: additive [B, 1, T, T].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x);  // down(silu(gate(x)) · up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask);
  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// The decoder stack: `model.*` in Hugging Face's names.
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(LlamaConfig config);

  // Hidden states [B, T, hidden] of int64 ids [B, T]. attention_mask [B, T] (1 = token, 0 = right padding)
  // defaults to all ones. layer = -1: after the final RMSNorm; layer = l in [0, layers): output of block l.
  at::Tensor hidden_states(const at::Tensor& ids, const at::Tensor& attention_mask = {}, int64_t layer = -1);
  // Next-token logits [B, T, vocab].
  at::Tensor logits(const at::Tensor& ids, const at::Tensor& attention_mask = {});

  // Loads weights from a Hugging Face directory (config.json + model.safetensors or an index of shards) or a
  // llama2.c .bin. Missing, unexpected or misshaped tensors: one kclip::Error listing them.
  static std::shared_ptr<LlamaImpl> load(const std::filesystem::path& path);
  static std::shared_ptr<LlamaImpl> load_hf(const std::filesystem::path& directory);
  static std::shared_ptr<LlamaImpl> load_llama2c(const std::filesystem::path& bin);
  // Copies `weights` (Hugging Face names) into the parameters; `source` names them in errors.
  void load_weights(const TensorDict& weights, const std::string& source);

  const LlamaConfig& config() const { return config_; }
  LlamaModel model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // empty when tied to the token embedding

 private:
  LlamaConfig config_;
};
TORCH_MODULE(Llama);

}  // namespace kclip
