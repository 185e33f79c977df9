// CLIP: config, the residual attention blocks, both towers, and the OpenAI-layout loader.
#include <kclip/clip.h>
#include <kclip/error.h>
#include <kclip/runtime.h>

#include "core/checks.h"
#include "core/autocast.h"
#include "core/model_files.h"
#include "clip/fused_ops.h"

#include <ATen/ATen.h>
#include <torch/version.h>
#include <torch/autograd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <regex>
#include <set>

#ifndef KCLIP_CONFIG_SOURCE_DIR
#define KCLIP_CONFIG_SOURCE_DIR ""
#endif
#ifndef KCLIP_CONFIG_INSTALL_DIR
#define KCLIP_CONFIG_INSTALL_DIR ""
#endif

namespace kclip {

// ---- config ----------------------------------------------------------------------------------------------

CLIPConfig CLIPConfig::from_json(const std::filesystem::path& path) {
  const std::string where = path.string();
  const nlohmann::json j = detail::read_json_file(path);
  auto get = [&](const nlohmann::json& obj, const char* section, const char* key, int64_t& out, bool required) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) fail("{}: field '{}{}' is missing", where, section, key);
      return;
    }
    if (!it->is_number_integer() || it->get<int64_t>() < 1)
      fail("{}: field '{}{}' is {}: expected a positive integer", where, section, key, it->dump());
    out = it->get<int64_t>();
  };
  if (!j.is_object() || !j.contains("vision_cfg") || !j.contains("text_cfg"))
    fail("{}: expected an open_clip model config with 'embed_dim', 'vision_cfg' and 'text_cfg'", where);
  CLIPConfig c;
  get(j, "", "embed_dim", c.embed_dim, true);
  const auto& v = j["vision_cfg"];
  const auto& t = j["text_cfg"];
  get(v, "vision_cfg.", "image_size", c.image_size, true);
  get(v, "vision_cfg.", "patch_size", c.patch_size, true);
  get(v, "vision_cfg.", "width", c.vision_width, true);
  get(v, "vision_cfg.", "layers", c.vision_layers, true);
  int64_t head_width = 64;  // open_clip's default: vision heads = width / head_width
  get(v, "vision_cfg.", "head_width", head_width, false);
  c.vision_heads = c.vision_width / head_width;
  get(t, "text_cfg.", "context_length", c.context_length, true);
  get(t, "text_cfg.", "vocab_size", c.vocab_size, true);
  get(t, "text_cfg.", "width", c.text_width, true);
  get(t, "text_cfg.", "layers", c.text_layers, true);
  get(t, "text_cfg.", "heads", c.text_heads, true);
  const auto quick = j.find("quick_gelu");
  if (quick != j.end() && !quick->is_boolean()) fail("{}: field 'quick_gelu' is {}: expected true or false", where, quick->dump());
  c.activation = quick != j.end() && quick->get<bool>() ? "quick_gelu" : "gelu";
  c.validate(where);
  return c;
}

CLIPConfig CLIPConfig::named(const std::string& name) {
  std::vector<std::filesystem::path> dirs;
  if (const char* env = std::getenv("KCLIP_CONFIG_DIR"); env && *env) dirs.emplace_back(env);
  for (const char* dir : {KCLIP_CONFIG_SOURCE_DIR, KCLIP_CONFIG_INSTALL_DIR})  // source tree, then install prefix
    if (*dir) dirs.emplace_back(dir);
  for (const auto& dir : dirs)
    if (std::filesystem::is_regular_file(dir / (name + ".json"))) return from_json(dir / (name + ".json"));
  fail_value("no CLIP config named '{}' (looked for {}.json in KCLIP_CONFIG_DIR and kclip's configs/)", name, name);
}

CLIPConfig CLIPConfig::infer_openai(const TensorDict& s) {
  auto shape = [&](const char* name) {
    if (!s.contains(name)) fail("OpenAI CLIP state dict: tensor '{}' is missing", name);
    return s[name].sizes().vec();
  };
  CLIPConfig c;
  const auto conv = shape("visual.conv1.weight");
  c.vision_width = conv[0];
  c.patch_size = conv.back();
  const int64_t grid = std::llround(std::sqrt(static_cast<double>(shape("visual.positional_embedding")[0] - 1)));
  c.image_size = grid * c.patch_size;
  c.embed_dim = shape("text_projection")[1];
  c.context_length = shape("positional_embedding")[0];
  c.vocab_size = shape("token_embedding.weight")[0];
  c.text_width = shape("ln_final.weight")[0];
  std::set<int64_t> vision_blocks, text_blocks;
  const std::regex block(R"(^(visual\.)?transformer\.resblocks\.(\d+)\.)");
  for (const auto& item : s) {
    std::smatch m;
    if (std::regex_search(item.key(), m, block)) (m[1].matched ? vision_blocks : text_blocks).insert(std::stoll(m[2]));
  }
  c.vision_layers = static_cast<int64_t>(vision_blocks.size());
  c.text_layers = static_cast<int64_t>(text_blocks.size());
  c.vision_heads = c.vision_width / 64;  // OpenAI's build_model: heads = width / 64
  c.text_heads = c.text_width / 64;
  c.activation = "quick_gelu";
  c.validate("OpenAI CLIP state dict");
  return c;
}

void CLIPConfig::validate(const std::string& where) const {
  if (embed_dim < 1 || vision_layers < 1 || text_layers < 1 || vision_heads < 1 || text_heads < 1)
    fail("{}: embed_dim, layers and heads must be positive", where);
  if (image_size % patch_size != 0) fail("{}: image_size {} is not a multiple of patch_size {}", where, image_size, patch_size);
  if (vision_width % vision_heads != 0 || text_width % text_heads != 0)
    fail("{}: widths must split into heads (vision {}/{}, text {}/{})", where, vision_width, vision_heads, text_width,
         text_heads);
  if (activation != "quick_gelu" && activation != "gelu") fail("{}: activation '{}': expected quick_gelu or gelu", where, activation);
}

// ---- blocks ----------------------------------------------------------------------------------------------

namespace {

torch::nn::LayerNorm layer_norm(int64_t width) { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(1e-5)); }

// x·wᵀ + b over the flattened leading dimensions: one addmm (LibTorch 1.13's linear on 3-D input does mm, then add).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor flat = x.reshape({-1, x.size(-1)});
  const at::Tensor y = bias.defined() ? at::addmm(bias, flat, weight.t()) : at::mm(flat, weight.t());
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

// OpenAI's LayerNorm subclass computes in float32 whatever the input dtype.
at::Tensor norm32(torch::nn::LayerNorm& ln, const at::Tensor& x) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, ln->weight.to(at::kFloat), ln->bias.to(at::kFloat), 1e-5)
      .to(x.scalar_type());
}

}  // namespace

PackedAttentionImpl::PackedAttentionImpl(int64_t width, int64_t heads_) : heads(heads_) {
  in_proj_weight = register_parameter("in_proj_weight", at::empty({3 * width, width}));
  in_proj_bias = register_parameter("in_proj_bias", at::zeros({3 * width}));
  out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  torch::nn::init::xavier_uniform_(in_proj_weight);
}

at::Tensor PackedAttentionImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const int64_t b = x.size(0), t = x.size(1), w = x.size(2), d = w / heads;
  // q, k, v as [batch·heads, t, d] in one copy; the 1/√d scale and the additive mask fold into one baddbmm.
  const at::Tensor packed = linear(x, in_proj_weight, in_proj_bias);  // [B, T, 3w]: q, k, v
  if (detail::attention_is_fused(packed, mask))
    return linear(detail::attention(packed, mask, heads), out_proj->weight, out_proj->bias);
  // (unbind, not indexing: its backward stacks the three gradients instead of adding three zero-padded copies)
  const auto qkv = packed.view({b, t, 3, heads, d}).permute({2, 0, 3, 1, 4}).reshape({3, b * heads, t, d}).unbind(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor keys = qkv[1].transpose(1, 2);
  const at::Tensor scores = mask.defined() ? at::baddbmm(mask, qkv[0], keys, 1.0, scale) : at::bmm(qkv[0], keys).mul_(scale);
  const at::Tensor out = at::bmm(at::softmax(scores, -1), qkv[2]);
  return linear(out.view({b, heads, t, d}).transpose(1, 2).reshape({b, t, w}), out_proj->weight, out_proj->bias);
}

at::Tensor PackedAttentionImpl::forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions) {
  const int64_t b = x.size(0), t = x.size(1), w = x.size(2), d = w / heads;
  const at::Tensor rows = at::arange(b, positions.options());
  // The query of one position; keys and values of all, from the packed weight's row blocks [q; k; v].
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor q = at::addmm(in_proj_bias.narrow(0, 0, w), x.index({rows, positions}), in_proj_weight.narrow(0, 0, w).t()) * scale;
  const auto kv = linear(x, in_proj_weight.narrow(0, w, 2 * w), in_proj_bias.narrow(0, w, 2 * w))
                            .view({b, t, 2, heads, d}).permute({2, 0, 3, 1, 4}).unbind(0);  // 2 × [B, heads, T, d]
  // One query row per head: elementwise products and sums, not B·heads matrix-vector products through bmm.
  at::Tensor scores = (kv[0] * q.view({b, heads, 1, d})).sum(-1);  // [B, heads, T]
  if (mask.defined()) scores = scores + mask.index_select(0, positions).view({b, 1, t});
  const at::Tensor out = (at::softmax(scores, -1).unsqueeze(-1) * kv[1]).sum(2);  // [B, heads, d]
  return at::addmm(out_proj->bias, out.reshape({b, w}), out_proj->weight.t());
}

at::Tensor PackedAttentionImpl::forward_packed(const at::Tensor& x, const std::vector<int64_t>& lengths,
                                              const at::Tensor& mask) {
  const at::Tensor packed = linear(x, in_proj_weight, in_proj_bias);  // [N, 3w]
  return linear(detail::attention_packed(packed, lengths, mask, heads), out_proj->weight, out_proj->bias);
}

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(int64_t width, int64_t heads, const std::string& activation)
    : quick_gelu(activation == "quick_gelu") {
  attn = register_module("attn", PackedAttention(width, heads));
  ln_1 = register_module("ln_1", layer_norm(width));
  ln_2 = register_module("ln_2", layer_norm(width));
  auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());  // OpenAI's names: mlp.c_fc, mlp.c_proj
  c_fc = mlp->register_module("c_fc", torch::nn::Linear(width, 4 * width));
  c_proj = mlp->register_module("c_proj", torch::nn::Linear(4 * width, width));
}

at::Tensor ResidualAttentionBlockImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  return mlp(x + attn->forward(norm32(ln_1, x), mask));
}

at::Tensor ResidualAttentionBlockImpl::forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions) {
  const at::Tensor rows = at::arange(x.size(0), positions.options());
  return mlp(x.index({rows, positions}) + attn->forward_at(norm32(ln_1, x), mask, positions));
}

at::Tensor ResidualAttentionBlockImpl::forward_packed(const at::Tensor& x, const std::vector<int64_t>& lengths,
                                                     const at::Tensor& mask) {
  return mlp(x + attn->forward_packed(norm32(ln_1, x), lengths, mask));
}

// h + MLP(ln_2(h)), the block's second residual branch.
at::Tensor ResidualAttentionBlockImpl::mlp(const at::Tensor& h) {
  const at::Tensor n = norm32(ln_2, h);
  if (!quick_gelu) return h + linear(at::gelu(linear(n, c_fc->weight, c_fc->bias)), c_proj->weight, c_proj->bias);
  if (detail::fused_loops_apply(n, c_fc->weight))
    return h + linear(detail::quick_gelu(linear(n, c_fc->weight, c_fc->bias)), c_proj->weight, c_proj->bias);
  // Elsewhere (CUDA, autocast): QuickGELU(u) = u·σ(1.702u) = silu(1.702u) / 1.702, with the factors folded into
  // the (small) weights, leaves one silu pass over the wide activations instead of three elementwise passes.
  constexpr double k = 1.702;
  const at::Tensor v = at::silu(linear(n, c_fc->weight * k, c_fc->bias * k));
  return h + linear(v, c_proj->weight / k, c_proj->bias);
}

CLIPTransformerImpl::CLIPTransformerImpl(int64_t width, int64_t layers, int64_t heads, const std::string& activation) {
  resblocks = register_module("resblocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i) resblocks->push_back(ResidualAttentionBlock(width, heads, activation));
}

namespace {

// A residual block whose activations are not kept: forward runs without a graph, backward recomputes the block
// from its saved input and backpropagates through the recomputation (parameters get their gradients there).
struct CheckpointedBlock : torch::autograd::Function<CheckpointedBlock> {
  // The mask travels by pointer: it needs no gradient, and autograd rejects undefined tensor inputs.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor* mask,
                            ResidualAttentionBlockImpl* block) {
    ctx->save_for_backward({x});
    ctx->saved_data["mask"] = *mask;
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    const detail::AutocastState autocast;
    ctx->saved_data["autocast_cuda"] = autocast.cuda;
    ctx->saved_data["autocast_cpu"] = autocast.cpu;
    ctx->saved_data["autocast_cuda_dtype"] = static_cast<int64_t>(autocast.cuda_dtype);
    ctx->saved_data["autocast_cpu_dtype"] = static_cast<int64_t>(autocast.cpu_dtype);
    torch::NoGradGuard no_grad;
    return block->forward(x, *mask);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_output) {
    auto* block = reinterpret_cast<ResidualAttentionBlockImpl*>(ctx->saved_data["block"].toInt());
    const at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    const detail::AutocastState outer;
    detail::AutocastState inner;
    inner.cuda = ctx->saved_data["autocast_cuda"].toBool();
    inner.cpu = ctx->saved_data["autocast_cpu"].toBool();
    inner.cuda_dtype = static_cast<at::ScalarType>(ctx->saved_data["autocast_cuda_dtype"].toInt());
    inner.cpu_dtype = static_cast<at::ScalarType>(ctx->saved_data["autocast_cpu_dtype"].toInt());
    at::Tensor h;
    {
      torch::AutoGradMode grad(true);
      inner.apply();
      h = block->forward(x, ctx->saved_data["mask"].toTensor());
      outer.apply();
    }
    torch::autograd::backward({h}, {grad_output[0]});
    return {x.grad(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor CLIPTransformerImpl::forward(const at::Tensor& x, const at::Tensor& mask) {
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  at::Tensor h = x;
  for (std::size_t i = 0; i < resblocks->size(); ++i) {
    auto* block = resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    h = checkpoint ? CheckpointedBlock::apply(h, &mask, block) : block->forward(h, mask);
  }
  return h;
}

at::Tensor CLIPTransformerImpl::forward_at(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& positions) {
  const bool checkpoint = grad_checkpointing && is_training() && at::GradMode::is_enabled();
  const auto last = resblocks->size() - 1;
  at::Tensor h = x;
  for (std::size_t i = 0; i < last; ++i) {
    auto* block = resblocks->ptr<ResidualAttentionBlockImpl>(i).get();
    h = checkpoint ? CheckpointedBlock::apply(h, &mask, block) : block->forward(h, mask);
  }
  // The last block keeps its activations even when checkpointing: for one query row they are about the size of
  // its input, which a checkpoint would keep anyway.
  return resblocks->ptr<ResidualAttentionBlockImpl>(last)->forward_at(h, mask, positions);
}

at::Tensor CLIPTransformerImpl::forward_packed_at(const at::Tensor& x, const std::vector<int64_t>& lengths,
                                                 const at::Tensor& mask, const at::Tensor& rows,
                                                 int64_t padded_length, const at::Tensor& positions) {
  const auto last = resblocks->size() - 1;
  at::Tensor h = x;
  for (std::size_t i = 0; i < last; ++i) h = resblocks->ptr<ResidualAttentionBlockImpl>(i)->forward_packed(h, lengths, mask);
  // The last block computes keys and values for every position of the padded layout (zero rows past each
  // sequence's end, which its mask row hides), its query only at `positions`.
  const int64_t batch = static_cast<int64_t>(lengths.size());
  const at::Tensor padded = at::zeros({batch * padded_length, h.size(1)}, h.options()).index_copy(0, rows, h);
  return resblocks->ptr<ResidualAttentionBlockImpl>(last)->forward_at(padded.view({batch, padded_length, -1}), mask, positions);
}

// ---- towers ----------------------------------------------------------------------------------------------

VisionTransformerImpl::VisionTransformerImpl(const CLIPConfig& c) {
  const int64_t w = c.vision_width, grid = c.image_size / c.patch_size;
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, w, c.patch_size).stride(c.patch_size).bias(false)));
  const double scale = 1.0 / std::sqrt(static_cast<double>(w));
  class_embedding = register_parameter("class_embedding", at::randn({w}) * scale);
  positional_embedding = register_parameter("positional_embedding", at::randn({grid * grid + 1, w}) * scale);
  ln_pre = register_module("ln_pre", layer_norm(w));
  transformer = register_module("transformer", CLIPTransformer(w, c.vision_layers, c.vision_heads, c.activation));
  ln_post = register_module("ln_post", layer_norm(w));
  proj = register_parameter("proj", at::randn({w, c.embed_dim}) * scale);
}

at::Tensor VisionTransformerImpl::forward(const at::Tensor& pixels) {
  at::Tensor x = conv1->forward(pixels.to(conv1->weight.device(), conv1->weight.scalar_type()));  // [B, w, g, g]
  x = x.flatten(2).transpose(1, 2);                                        // [B, g², w]
  at::Tensor cls = class_embedding.to(x.scalar_type()).expand({x.size(0), 1, x.size(2)});
  x = at::cat({cls, x}, 1) + positional_embedding.to(x.scalar_type());
  const at::Tensor first = at::zeros({x.size(0)}, at::TensorOptions(x.device()).dtype(at::kLong));  // the CLS token
  return norm32(ln_post, transformer->forward_at(norm32(ln_pre, x), {}, first)).matmul(proj);
}

CLIPImpl::CLIPImpl(CLIPConfig config) : config_(std::move(config)) {
  const auto& c = config_;
  c.validate("CLIPConfig");
  visual = register_module("visual", VisionTransformer(c));
  token_embedding = register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.text_width));
  positional_embedding = register_parameter("positional_embedding", at::randn({c.context_length, c.text_width}) * 0.01);
  transformer = register_module("transformer", CLIPTransformer(c.text_width, c.text_layers, c.text_heads, c.activation));
  ln_final = register_module("ln_final", layer_norm(c.text_width));
  text_projection = register_parameter("text_projection", at::randn({c.text_width, c.embed_dim}) / std::sqrt(double(c.text_width)));
  logit_scale = register_parameter("logit_scale", at::full({}, std::log(1 / 0.07)));
  causal_mask_ = at::full({c.context_length, c.context_length}, -std::numeric_limits<float>::infinity()).triu(1);
}

at::Tensor CLIPImpl::encode_image(const at::Tensor& pixels) {
  init();
  const int64_t s = config_.image_size;
  if (!pixels.defined() || pixels.dim() != 4 || pixels.size(1) != 3 || pixels.size(2) != s || pixels.size(3) != s)
    fail_value("CLIP.encode_image: pixels have shape {}: expected [batch, 3, {}, {}]",
               pixels.defined() ? detail::shape_of(pixels) : "undefined", s, s);
  return visual->forward(pixels);
}

at::Tensor CLIPImpl::encode_text(const at::Tensor& ids) {
  init();
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != at::kLong || ids.size(1) > config_.context_length)
    fail_value("CLIP.encode_text: ids have shape {}: expected int64 [batch, <= {}]",
               ids.defined() ? detail::shape_of(ids) : "undefined", config_.context_length);
  if (ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= config_.vocab_size))
    fail_value("CLIP.encode_text: token ids must lie in [0, {})", config_.vocab_size);
  // The text feature is taken at the end-of-text token, the highest id in each row (as OpenAI does). Under the
  // causal mask no position after the batch's last end-of-text token reaches a feature: they are not computed
  // (padding is most of a 77-token context), which leaves every feature and gradient as it was.
  const at::Tensor eot = ids.argmax(1);
  const int64_t t = ids.size(0) ? eot.max().item<int64_t>() + 1 : ids.size(1);
  const at::Tensor tokens = ids.narrow(1, 0, t).to(token_embedding->weight.device());
  const at::Tensor& weight = token_embedding->weight;
  const at::Tensor mask = causal_mask_.narrow(0, 0, t).narrow(1, 0, t).to(weight.device(), weight.scalar_type()).contiguous();
  const bool checkpointing = transformer->grad_checkpointing && is_training() && at::GradMode::is_enabled();
  if (detail::fused_loops_apply(mask, weight) && !checkpointing && ids.size(0) > 0) {
    // Each caption only up to its own end-of-text token (the positions after it reach no feature either): the
    // rows of all captions packed back to back, so the blocks' products skip the batch's padding.
    const at::Tensor eot_cpu = eot.to(at::kCPU), lengths = eot_cpu + 1;
    const at::Tensor rows = (at::arange(t, lengths.options()).unsqueeze(0) < lengths.unsqueeze(1)).flatten().nonzero().squeeze(1);
    const at::Tensor x = detail::embedding_rows(weight, tokens.flatten().index_select(0, rows)) +
                         positional_embedding.index_select(0, rows.remainder(t));
    const std::vector<int64_t> sizes(lengths.data_ptr<int64_t>(), lengths.data_ptr<int64_t>() + lengths.numel());
    return norm32(ln_final, transformer->forward_packed_at(x, sizes, mask, rows, t, eot_cpu)).matmul(text_projection);
  }
  at::Tensor x = detail::embedding_rows(weight, tokens) + positional_embedding.narrow(0, 0, t);
  return norm32(ln_final, transformer->forward_at(x, mask, eot.to(tokens.device()))).matmul(text_projection);
}

std::pair<at::Tensor, at::Tensor> CLIPImpl::forward(const at::Tensor& pixels, const at::Tensor& ids) {
  at::Tensor image = encode_image(pixels), text = encode_text(ids);
  image = image / image.norm(2, {1}, true);
  text = text / text.norm(2, {1}, true);
  at::Tensor per_image = logit_scale.exp() * image.matmul(text.t());
  return {per_image, per_image.t()};
}

void CLIPImpl::set_grad_checkpointing(bool enable) {
  visual->transformer->grad_checkpointing = enable;
  transformer->grad_checkpointing = enable;
}

// ---- loading ---------------------------------------------------------------------------------------------

void CLIPImpl::load_weights(const TensorDict& state, const std::string& source) {
  detail::load_parameters(
      named_parameters(), state, source, "CLIP",
      // OpenAI checkpoints may carry these non-parameters; build_model drops them too.
      [](const std::string& name) { return name == "input_resolution" || name == "context_length" || name == "vocab_size"; },
      // logit_scale is stored as [] or [1].
      [](const at::Tensor& param, const at::Tensor& value) {
        return param.sizes() == value.sizes() || (param.numel() == 1 && value.numel() == 1);
      });
}

namespace {

// The config's sizes against the tensors (memory-mapped, nothing read yet), before the model is built from it.
void check_hf_config(const CLIPConfig& c, const TensorDict& w, const std::string& config, const std::string& source) {
  const detail::ConfigCheck check(w, config, source);
  auto evidence = [&](const std::string& name) { return name + " " + detail::shape_of(w[name]); };
  check.expect("vision_config.num_hidden_layers", c.vision_layers, check.count_blocks("vision_model.encoder.layers."),
               "vision_model.encoder.layers.N blocks");
  check.expect("text_config.num_hidden_layers", c.text_layers, check.count_blocks("text_model.encoder.layers."),
               "text_model.encoder.layers.N blocks");
  const std::string patch = "vision_model.embeddings.patch_embedding.weight";
  const auto p = check.shape(patch, 4);
  check.expect("vision_config.hidden_size", c.vision_width, p[0], evidence(patch));
  check.expect("vision_config.patch_size", c.patch_size, p[3], evidence(patch));
  const std::string positions = "vision_model.embeddings.position_embedding.weight";
  const int64_t grid = c.image_size / c.patch_size;
  check.expect("vision_config.image_size / patch_size, squared, + 1", grid * grid + 1, check.shape(positions, 2)[0],
               evidence(positions));
  const std::string tokens = "text_model.embeddings.token_embedding.weight";
  const auto t = check.shape(tokens, 2);
  check.expect("text_config.vocab_size", c.vocab_size, t[0], evidence(tokens));
  check.expect("text_config.hidden_size", c.text_width, t[1], evidence(tokens));
  const std::string context = "text_model.embeddings.position_embedding.weight";
  check.expect("text_config.max_position_embeddings", c.context_length, check.shape(context, 2)[0], evidence(context));
  check.expect("projection_dim", c.embed_dim, check.shape("visual_projection.weight", 2)[0],
               evidence("visual_projection.weight"));
}

// A config given for an OpenAI-layout file: every size the shapes determine must agree.
void check_openai_config(const CLIPConfig& c, const TensorDict& state, const std::string& source) {
  const CLIPConfig shapes = CLIPConfig::infer_openai(state);
  const std::string config = "the given CLIPConfig", from = "from the tensor shapes of " + source;
  const detail::ConfigCheck check(state, config, source);
  check.expect("embed_dim", c.embed_dim, shapes.embed_dim, from);
  check.expect("image_size", c.image_size, shapes.image_size, from);
  check.expect("patch_size", c.patch_size, shapes.patch_size, from);
  check.expect("vision_width", c.vision_width, shapes.vision_width, from);
  check.expect("vision_layers", c.vision_layers, shapes.vision_layers, from);
  check.expect("context_length", c.context_length, shapes.context_length, from);
  check.expect("vocab_size", c.vocab_size, shapes.vocab_size, from);
  check.expect("text_width", c.text_width, shapes.text_width, from);
  check.expect("text_layers", c.text_layers, shapes.text_layers, from);
}

}  // namespace

std::shared_ptr<CLIPImpl> CLIPImpl::load(const std::filesystem::path& path, const CLIPConfig* config) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {  // Hugging Face CLIPModel
    const CLIPConfig c = config ? *config : CLIPConfig::from_hf_json(path / "config.json");
    TensorDict weights = load_safetensors(path);
    check_hf_config(c, weights, config ? "the given CLIPConfig" : (path / "config.json").string(), path.string());
    auto model = std::make_shared<CLIPImpl>(c);
    model->load_weights(clip_hf_to_openai(weights, c, path.string()), path.string());
    return model;
  }
  TensorDict state = load_safetensors(path);
  if (config) check_openai_config(*config, state, path.string());
  auto model = std::make_shared<CLIPImpl>(config ? *config : CLIPConfig::infer_openai(state));
  model->load_weights(state, path.string());
  return model;
}

}  // namespace kclip
