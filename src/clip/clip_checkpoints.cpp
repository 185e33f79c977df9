// CLIP checkpoints in Hugging Face's CLIPModel layout: config.json and the state-dict mapping, both ways; save().
#include <kclip/clip.h>
#include <kclip/error.h>

#include "core/model_files.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

namespace kclip {
namespace {

// Per-block renames shared by both towers: OpenAI suffix -> Hugging Face suffix.
const std::vector<std::pair<std::string, std::string>> kBlockNames = {
    {"attn.out_proj.weight", "self_attn.out_proj.weight"}, {"attn.out_proj.bias", "self_attn.out_proj.bias"},
    {"ln_1.weight", "layer_norm1.weight"},                 {"ln_1.bias", "layer_norm1.bias"},
    {"ln_2.weight", "layer_norm2.weight"},                 {"ln_2.bias", "layer_norm2.bias"},
    {"mlp.c_fc.weight", "mlp.fc1.weight"},                 {"mlp.c_fc.bias", "mlp.fc1.bias"},
    {"mlp.c_proj.weight", "mlp.fc2.weight"},               {"mlp.c_proj.bias", "mlp.fc2.bias"},
};

// Tower-level renames (OpenAI -> HF); projections are transposed separately.
const std::vector<std::pair<std::string, std::string>> kTowerNames = {
    {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"},
    {"visual.class_embedding", "vision_model.embeddings.class_embedding"},
    {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"},
    {"visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"},  // sic: Hugging Face's name
    {"visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"},
    {"visual.ln_post.weight", "vision_model.post_layernorm.weight"},
    {"visual.ln_post.bias", "vision_model.post_layernorm.bias"},
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
    {"ln_final.weight", "text_model.final_layer_norm.weight"},
    {"ln_final.bias", "text_model.final_layer_norm.bias"},
    {"logit_scale", "logit_scale"},
};

struct Tower {
  std::string openai, hf;
  int64_t layers;
};

std::vector<Tower> towers(const CLIPConfig& c) {
  return {{"visual.transformer.resblocks.", "vision_model.encoder.layers.", c.vision_layers},
          {"transformer.resblocks.", "text_model.encoder.layers.", c.text_layers}};
}

const at::Tensor& need(const TensorDict& state, const std::string& name, const char* layout) {
  if (!state.contains(name)) fail("{} CLIP state dict: tensor '{}' is missing", layout, name);
  return state[name];
}

}  // namespace

TensorDict clip_openai_to_hf(const TensorDict& s, const CLIPConfig& c) {
  TensorDict out;
  for (const auto& [from, to] : kTowerNames) out.insert(to, need(s, from, "OpenAI"));
  out.insert("visual_projection.weight", need(s, "visual.proj", "OpenAI").t().contiguous());
  out.insert("text_projection.weight", need(s, "text_projection", "OpenAI").t().contiguous());
  for (const auto& tower : towers(c))
    for (int64_t l = 0; l < tower.layers; ++l) {
      const std::string o = tower.openai + std::to_string(l) + ".", h = tower.hf + std::to_string(l) + ".";
      auto w = need(s, o + "attn.in_proj_weight", "OpenAI").chunk(3, 0);
      auto b = need(s, o + "attn.in_proj_bias", "OpenAI").chunk(3, 0);
      const char* names[] = {"q_proj", "k_proj", "v_proj"};
      for (int i = 0; i < 3; ++i) {
        out.insert(h + "self_attn." + names[i] + ".weight", w[i].contiguous());
        out.insert(h + "self_attn." + names[i] + ".bias", b[i].contiguous());
      }
      for (const auto& [from, to] : kBlockNames) out.insert(h + to, need(s, o + from, "OpenAI"));
    }
  return out;
}

namespace {

// Every tensor name a Hugging Face CLIPModel of this config holds.
std::set<std::string> hf_names(const CLIPConfig& c) {
  std::set<std::string> names{"visual_projection.weight", "text_projection.weight"};
  for (const auto& [openai, hf] : kTowerNames) names.insert(hf);
  for (const auto& tower : towers(c))
    for (int64_t l = 0; l < tower.layers; ++l) {
      const std::string h = tower.hf + std::to_string(l) + ".";
      for (const char* proj : {"q_proj", "k_proj", "v_proj"})
        for (const char* kind : {".weight", ".bias"}) names.insert(h + "self_attn." + proj + kind);
      for (const auto& [openai, hf] : kBlockNames) names.insert(h + hf);
    }
  return names;
}

}  // namespace

TensorDict clip_hf_to_openai(const TensorDict& s, const CLIPConfig& c, const std::string& source) {
  // Names first, all at once and in Hugging Face's own names; shapes are checked by load_weights afterwards.
  const std::set<std::string> expected = hf_names(c);
  std::vector<std::string> missing, unexpected;
  for (const auto& name : expected)
    if (!s.contains(name)) missing.push_back(name);
  for (const auto& item : s)  // Hugging Face also saves position_ids buffers: not parameters
    if (!expected.count(item.key()) && item.key().find("position_ids") == std::string::npos)
      unexpected.push_back(item.key());
  if (!missing.empty() || !unexpected.empty())
    fail("{}: checkpoint does not fit the CLIP config: missing [{}]; unexpected [{}]", source,
         fmt::join(missing, ", "), fmt::join(unexpected, ", "));

  TensorDict out;
  for (const auto& [to, from] : kTowerNames) out.insert(to, s[from]);
  out.insert("visual.proj", s["visual_projection.weight"].t().contiguous());
  out.insert("text_projection", s["text_projection.weight"].t().contiguous());
  for (const auto& tower : towers(c))
    for (int64_t l = 0; l < tower.layers; ++l) {
      const std::string o = tower.openai + std::to_string(l) + ".", h = tower.hf + std::to_string(l) + ".";
      const std::string q = h + "self_attn.q_proj", k = h + "self_attn.k_proj", v = h + "self_attn.v_proj";
      out.insert(o + "attn.in_proj_weight", at::cat({s[q + ".weight"], s[k + ".weight"], s[v + ".weight"]}));
      out.insert(o + "attn.in_proj_bias", at::cat({s[q + ".bias"], s[k + ".bias"], s[v + ".bias"]}));
      for (const auto& [to, from] : kBlockNames) out.insert(o + to, s[h + from]);
    }
  return out;
}

CLIPConfig CLIPConfig::from_hf_json(const std::filesystem::path& path) {
  const std::string where = path.string();
  const nlohmann::json j = detail::read_json_file(path);
  try {
    const auto& v = j.at("vision_config");
    const auto& t = j.at("text_config");
    CLIPConfig c;
    c.embed_dim = detail::json_int(j.at("projection_dim"));
    c.vision_width = detail::json_int(v.at("hidden_size"));
    c.vision_layers = detail::json_int(v.at("num_hidden_layers"));
    c.vision_heads = detail::json_int(v.at("num_attention_heads"));
    c.image_size = detail::json_int(v.at("image_size"));
    c.patch_size = detail::json_int(v.at("patch_size"));
    c.text_width = detail::json_int(t.at("hidden_size"));
    c.text_layers = detail::json_int(t.at("num_hidden_layers"));
    c.text_heads = detail::json_int(t.at("num_attention_heads"));
    c.context_length = detail::json_int(t.at("max_position_embeddings"));
    c.vocab_size = detail::json_int(t.at("vocab_size"));
    c.activation = t.contains("hidden_act") ? t.at("hidden_act").get<std::string>() : "quick_gelu";
    c.validate(where);
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a Hugging Face CLIPConfig: {}", where, e.what());
  }
}

std::string CLIPConfig::to_hf_json() const {
  nlohmann::ordered_json j = {
      {"architectures", {"CLIPModel"}},
      {"model_type", "clip"},
      {"projection_dim", embed_dim},
      {"logit_scale_init_value", 2.6592},
      {"text_config",
       {{"hidden_size", text_width}, {"intermediate_size", 4 * text_width}, {"num_attention_heads", text_heads},
        {"num_hidden_layers", text_layers}, {"max_position_embeddings", context_length}, {"vocab_size", vocab_size},
        {"hidden_act", activation}, {"layer_norm_eps", 1e-5}, {"projection_dim", embed_dim}}},
      {"vision_config",
       {{"hidden_size", vision_width}, {"intermediate_size", 4 * vision_width}, {"num_attention_heads", vision_heads},
        {"num_hidden_layers", vision_layers}, {"image_size", image_size}, {"patch_size", patch_size},
        {"hidden_act", activation}, {"layer_norm_eps", 1e-5}, {"projection_dim", embed_dim}}},
      {"torch_dtype", "float32"},
  };
  return j.dump(2) + "\n";
}

void CLIPImpl::save(const std::filesystem::path& path, const std::string& layout) {
  TensorDict openai;
  for (const auto& p : named_parameters()) openai.insert(p.key(), p.value().detach());
  if (layout == "openai") {
    save_safetensors(path, openai, {{"format", "pt"}, {"layout", "openai-clip"}});
  } else if (layout == "hf") {
    std::filesystem::create_directories(path);
    save_safetensors(path / "model.safetensors", clip_openai_to_hf(openai, config_), {{"format", "pt"}});
    detail::write_text_atomically(path / "config.json", config_.to_hf_json());
  } else {
    fail_value("CLIP.save: layout '{}': expected 'openai' or 'hf'", layout);
  }
}

}  // namespace kclip
