// Llama loaders: Hugging Face directories and llama2.c checkpoints, both into Hugging Face parameter names.
#include <kclip/error.h>
#include <kclip/llama.h>

#include "core/checks.h"
#include "core/model_files.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>

namespace kclip {

void LlamaImpl::load_weights(const TensorDict& weights, const std::string& source) {
  const bool tied = config_.tie_word_embeddings;
  detail::load_parameters(
      named_parameters(), weights, source, "Llama",
      // A tied head stored anyway (common in Hugging Face checkpoints) is the embedding: nothing to load.
      [tied](const std::string& name) { return tied && name == "lm_head.weight"; },
      [](const at::Tensor& param, const at::Tensor& value) { return param.sizes() == value.sizes(); });
}

namespace {

// Every size in config.json against the shapes of the tensors (memory-mapped, nothing read yet).
void check_config(const LlamaConfig& c, const TensorDict& weights, const std::filesystem::path& directory) {
  const detail::ConfigCheck check(weights, (directory / "config.json").string(), directory.string());
  const std::string embed = "model.embed_tokens.weight", layer = "model.layers.0.";
  const auto e = check.shape(embed, 2);
  check.expect("vocab_size", c.vocab_size, e[0], embed + " " + detail::shape_of(weights[embed]));
  check.expect("hidden_size", c.hidden_size, e[1], embed + " " + detail::shape_of(weights[embed]));
  check.expect("num_hidden_layers", c.num_hidden_layers, check.count_blocks("model.layers."), "model.layers.N blocks");
  const std::string k = layer + "self_attn.k_proj.weight", gate = layer + "mlp.gate_proj.weight";
  check.expect("num_key_value_heads", c.num_key_value_heads, check.shape(k, 2)[0] / c.head_dim(),
               k + " " + detail::shape_of(weights[k]) + " / head_dim " + std::to_string(c.head_dim()));
  check.expect("intermediate_size", c.intermediate_size, check.shape(gate, 2)[0], gate + " " + detail::shape_of(weights[gate]));
}

}  // namespace

std::shared_ptr<LlamaImpl> LlamaImpl::load_hf(const std::filesystem::path& directory) {
  const LlamaConfig config = LlamaConfig::from_json(directory / "config.json");
  TensorDict weights = load_safetensors(directory);
  check_config(config, weights, directory);
  auto model = std::make_shared<LlamaImpl>(config);
  model->load_weights(weights, directory.string());
  return model;
}

namespace {

// Meta's rotary layout rotates interleaved pairs (0,1), (2,3), ...; Hugging Face's rotates halves. Permuting the
// rows of q_proj/k_proj per head maps one onto the other (as Hugging Face's convert_llama_weights_to_hf does).
at::Tensor interleaved_to_half(const at::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

}  // namespace

std::shared_ptr<LlamaImpl> LlamaImpl::load_llama2c(const std::filesystem::path& bin) {
  const std::string where = bin.string();
  std::ifstream in(bin, std::ios::binary | std::ios::ate);
  if (!in) fail("{}: cannot open", where);
  const auto bytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  int32_t header[7] = {};
  if (bytes < sizeof(header) || !in.read(reinterpret_cast<char*>(header), sizeof(header)))
    fail("{}: shorter than llama2.c's 7-int header", where);
  for (int i = 0; i < 7; ++i)
    if (header[i] == 0 || (i != 5 && header[i] < 0))
      fail("{}: header field {} = {}: not a llama2.c checkpoint (dim, hidden_dim, n_layers, n_heads, n_kv_heads, "
           "vocab_size, seq_len)", where, i, header[i]);
  LlamaConfig c;
  c.hidden_size = header[0];
  c.intermediate_size = header[1];
  c.num_hidden_layers = header[2];
  c.num_attention_heads = header[3];
  c.num_key_value_heads = header[4];
  c.vocab_size = std::abs(header[5]);
  c.max_position_embeddings = header[6];
  c.tie_word_embeddings = header[5] > 0;  // llama2.c: negative vocab_size means a separate classifier
  c.validate(where);

  const int64_t dim = c.hidden_size, hidden = c.intermediate_size, layers = c.num_hidden_layers;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim(), vocab = c.vocab_size;
  // The sizes are checked against the file size in floating point first: int32 header fields multiplied in
  // int64 could overflow.
  const auto implied = [&](auto zero) {
    using T = decltype(zero);
    const T d = dim, h = hidden, l = layers, kv = kv_dim, v = vocab, rope = T(c.max_position_embeddings) * c.head_dim();
    return v * d + l * (2 * d + d * d * 2 + kv * d * 2 + h * d * 3) + d + rope + (c.tie_word_embeddings ? 0 : v * d);
  };
  if (28 + 4 * implied(0.0) > 1.01 * static_cast<double>(bytes) + 64)
    fail("{}: {} bytes, but its header implies {:.4g} (dim {}, hidden_dim {}, n_layers {}, vocab {}, seq_len {})",
         where, bytes, 28 + 4 * implied(0.0), dim, hidden, layers, vocab, c.max_position_embeddings);
  const int64_t rope_tables = c.max_position_embeddings * c.head_dim();  // freq_cis real + imag, unused
  const int64_t floats = implied(int64_t{0});
  if (bytes != sizeof(header) + 4 * static_cast<uint64_t>(floats))
    fail("{}: {} bytes, but its header implies {} (28 + 4 x {} floats)", where, bytes, 28 + 4 * floats, floats);
  at::Tensor all = at::empty({floats}, at::kFloat);
  in.read(reinterpret_cast<char*>(all.data_ptr<float>()), 4 * floats);

  int64_t offset = 0;
  auto take = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    at::Tensor t = all.narrow(0, offset, n).view(shape);
    offset += n;
    return t;
  };
  at::Tensor embed = take({vocab, dim}), rms_att = take({layers, dim}), wq = take({layers, dim, dim});
  at::Tensor wk = take({layers, kv_dim, dim}), wv = take({layers, kv_dim, dim}), wo = take({layers, dim, dim});
  at::Tensor rms_ffn = take({layers, dim}), w1 = take({layers, hidden, dim}), w2 = take({layers, dim, hidden});
  at::Tensor w3 = take({layers, hidden, dim}), rms_final = take({dim});
  offset += rope_tables;
  TensorDict weights;
  weights.insert("model.embed_tokens.weight", embed);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    weights.insert(p + "input_layernorm.weight", rms_att[l]);
    weights.insert(p + "self_attn.q_proj.weight", interleaved_to_half(wq[l], c.num_attention_heads));
    weights.insert(p + "self_attn.k_proj.weight", interleaved_to_half(wk[l], c.num_key_value_heads));
    weights.insert(p + "self_attn.v_proj.weight", wv[l]);
    weights.insert(p + "self_attn.o_proj.weight", wo[l]);
    weights.insert(p + "post_attention_layernorm.weight", rms_ffn[l]);
    weights.insert(p + "mlp.gate_proj.weight", w1[l]);
    weights.insert(p + "mlp.down_proj.weight", w2[l]);
    weights.insert(p + "mlp.up_proj.weight", w3[l]);
  }
  weights.insert("model.norm.weight", rms_final);
  if (!c.tie_word_embeddings) weights.insert("lm_head.weight", take({vocab, dim}));
  auto model = std::make_shared<LlamaImpl>(c);
  model->load_weights(weights, where);
  return model;
}

std::shared_ptr<LlamaImpl> LlamaImpl::load(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return load_hf(path);
  if (path.filename() == "config.json") return load_hf(path.parent_path());
  if (path.extension() == ".bin") return load_llama2c(path);
  fail("{}: expected a Hugging Face model directory or a llama2.c .bin file", path.string());
}

}  // namespace kclip
