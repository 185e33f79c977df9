// Llama: config, modules and the forward pass. Loaders are in llama_loaders.cpp.
#include <kclip/error.h>
#include <kclip/llama.h>
#include <kclip/runtime.h>

#include "core/checks.h"
#include "core/model_files.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <optional>

namespace kclip {

// ---- config ----------------------------------------------------------------------------------------------

LlamaConfig LlamaConfig::from_json(const std::filesystem::path& path) {
  const std::string where = path.string();
  const nlohmann::json j = detail::read_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", where);
  LlamaConfig c;
  auto integer = [&](const char* key, int64_t& out, bool required) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) fail("{}: field '{}' is missing", where, key);
      return;
    }
    if (!it->is_number_integer()) fail("{}: field '{}' is {}: expected an integer", where, key, it->dump());
    out = it->get<int64_t>();
  };
  auto number = [&](const char* key, double& out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (!it->is_number()) fail("{}: field '{}' is {}: expected a number", where, key, it->dump());
    out = it->get<double>();
  };
  integer("hidden_size", c.hidden_size, true);
  integer("intermediate_size", c.intermediate_size, true);
  integer("num_hidden_layers", c.num_hidden_layers, true);
  integer("num_attention_heads", c.num_attention_heads, true);
  c.num_key_value_heads = c.num_attention_heads;  // absent in older configs: plain multi-head attention
  integer("num_key_value_heads", c.num_key_value_heads, false);
  integer("vocab_size", c.vocab_size, true);
  integer("max_position_embeddings", c.max_position_embeddings, false);
  number("rms_norm_eps", c.rms_norm_eps);
  number("rope_theta", c.rope_theta);
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail("{}: field 'tie_word_embeddings' must be true or false", where);
    c.tie_word_embeddings = it->get<bool>();
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) c.torch_dtype = it->get<std::string>();
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    const bool linear = it->is_object() && detail::json_field_is(*it, it->contains("type") ? "type" : "rope_type", "linear");
    if (!linear || !it->contains("factor") || !(*it)["factor"].is_number())
      fail("{}: field 'rope_scaling' = {}: only {{\"type\": \"linear\", \"factor\": F}} is supported", where,
           it->dump());
    c.rope_scaling_factor = (*it)["factor"].get<double>();
  }
  c.validate(where);
  return c;
}

void LlamaConfig::validate(const std::string& where) const {
  if (hidden_size < 1 || intermediate_size < 1 || num_hidden_layers < 1 || num_attention_heads < 1 ||
      num_key_value_heads < 1 || vocab_size < 1 || max_position_embeddings < 1)
    fail("{}: sizes must be positive", where);
  if (hidden_size % num_attention_heads != 0 || head_dim() % 2 != 0)
    fail("{}: hidden_size {} must split into num_attention_heads {} heads of even size", where, hidden_size,
         num_attention_heads);
  if (num_attention_heads % num_key_value_heads != 0)
    fail("{}: num_attention_heads {} must be a multiple of num_key_value_heads {}", where, num_attention_heads,
         num_key_value_heads);
  if (!(rms_norm_eps > 0) || !(rope_theta > 0) || !(rope_scaling_factor > 0))
    fail("{}: rms_norm_eps, rope_theta and the rope scaling factor must be positive", where);
}

// ---- modules ---------------------------------------------------------------------------------------------

namespace {

torch::nn::Linear linear(int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); }

// Hugging Face's rotate_half: (x1, x2) -> (−x2, x1) over the two halves of the head dimension.
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

}  // namespace

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) { weight = register_parameter("weight", at::ones({dim})); }

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
  return weight * h.to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim()) {
  q_proj = register_module("q_proj", linear(c.hidden_size, heads * head_dim));
  k_proj = register_module("k_proj", linear(c.hidden_size, kv_heads * head_dim));
  v_proj = register_module("v_proj", linear(c.hidden_size, kv_heads * head_dim));
  o_proj = register_module("o_proj", linear(heads * head_dim, c.hidden_size));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       const at::Tensor& mask) {
  const int64_t b = x.size(0), t = x.size(1);
  // [B, T, heads·d] -> [B, heads, T, d]
  at::Tensor q = q_proj->forward(x).view({b, t, heads, head_dim}).transpose(1, 2);
  at::Tensor k = k_proj->forward(x).view({b, t, kv_heads, head_dim}).transpose(1, 2);
  at::Tensor v = v_proj->forward(x).view({b, t, kv_heads, head_dim}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  if (kv_heads != heads) {  // grouped-query attention: each kv head serves heads / kv_heads query heads
    k = k.repeat_interleave(heads / kv_heads, 1);
    v = v.repeat_interleave(heads / kv_heads, 1);
  }
  at::Tensor scores = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim)) + mask;
  at::Tensor attended = at::softmax(scores, -1, at::kFloat).to(q.scalar_type()).matmul(v);
  return o_proj->forward(attended.transpose(1, 2).reshape({b, t, heads * head_dim}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) {
  gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size));
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size));
  down_proj = register_module("down_proj", linear(c.intermediate_size, c.hidden_size));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", LlamaAttention(c));
  mlp = register_module("mlp", LlamaMLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                          const at::Tensor& mask) {
  at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, mask);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

LlamaImpl::LlamaImpl(LlamaConfig config) : config_(std::move(config)) {
  config_.validate("LlamaConfig");
  model = register_module("model", LlamaModel(config_));
  if (!config_.tie_word_embeddings) lm_head = register_module("lm_head", linear(config_.hidden_size, config_.vocab_size));
}

// ---- forward ---------------------------------------------------------------------------------------------

at::Tensor LlamaImpl::hidden_states(const at::Tensor& ids, const at::Tensor& attention_mask, int64_t layer) {
  init();
  const char* who = "Llama";
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != at::kLong)
    fail_value("{}: ids must be int64 [batch, tokens], got {}", who, ids.defined() ? detail::shape_of(ids) : "undefined");
  const int64_t b = ids.size(0), t = ids.size(1), n_layers = config_.num_hidden_layers;
  if (t == 0 || b == 0) fail_value("{}: ids {} is empty", who, detail::shape_of(ids));
  if (t > config_.max_position_embeddings)
    fail_value("{}: {} tokens exceed max_position_embeddings {}", who, t, config_.max_position_embeddings);
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= config_.vocab_size)
    fail_value("{}: token ids must lie in [0, {})", who, config_.vocab_size);
  if (layer < -1 || layer >= n_layers) fail_value("{}: layer {} not in [-1, {})", who, layer, n_layers);
  at::Tensor mask01 = attention_mask.defined() ? attention_mask : at::ones_like(ids);
  if (mask01.sizes() != ids.sizes())
    fail_value("{}: attention_mask {} must match ids {}", who, detail::shape_of(mask01), detail::shape_of(ids));

  const auto device = model->embed_tokens->weight.device();
  const auto dtype = model->embed_tokens->weight.scalar_type();
  // GEMMs dominate: on the CPU let OpenBLAS's threads have the cores (see GemmBoundScope).
  std::optional<GemmBoundScope> gemm_bound;
  if (device.is_cpu()) gemm_bound.emplace();
  at::Tensor tokens = ids.to(device);
  // Rotary tables: angle(pos, i) = (pos / scaling) · θ^(−2i/d), duplicated over both halves (rotate-half layout).
  const int64_t d = config_.head_dim();
  at::Tensor inv_freq = at::pow(config_.rope_theta, at::arange(0, d, 2, at::TensorOptions().dtype(at::kDouble)) / -d);
  at::Tensor positions = at::arange(t, at::TensorOptions().dtype(at::kDouble)) / config_.rope_scaling_factor;
  at::Tensor angles = at::outer(positions, inv_freq);
  angles = at::cat({angles, angles}, -1);
  at::Tensor cos = angles.cos().to(device, dtype), sin = angles.sin().to(device, dtype);
  // Additive mask [B, 1, T, T]: a query sees earlier keys that are real tokens. A large finite negative (not
  // −inf) keeps fully masked rows (padding queries) finite.
  at::Tensor causal = at::ones({t, t}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
  at::Tensor visible = causal.unsqueeze(0) & mask01.to(device).to(at::kBool).unsqueeze(1);
  at::Tensor mask = at::zeros({b, 1, t, t}, at::TensorOptions().dtype(dtype).device(device))
                        .masked_fill_(visible.unsqueeze(1).logical_not(), std::numeric_limits<float>::lowest() / 2);

  at::Tensor h = model->embed_tokens->forward(tokens);
  for (int64_t i = 0; i < n_layers; ++i) {
    h = model->layers->ptr<LlamaDecoderLayerImpl>(i)->forward(h, cos, sin, mask);
    if (i == layer) return h;
  }
  return model->norm->forward(h);
}

at::Tensor LlamaImpl::logits(const at::Tensor& ids, const at::Tensor& attention_mask) {
  at::Tensor h = hidden_states(ids, attention_mask, -1);
  return lm_head ? lm_head->forward(h) : at::matmul(h, model->embed_tokens->weight.t());
}

}  // namespace kclip
