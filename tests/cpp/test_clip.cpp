// CLIP against OpenAI's reference clip/model.py (../shared/golden/clip-tiny): features and logits.
#include "testing.h"

#include <kclip/clip.h>
#include <kclip/error.h>

#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;

namespace {

double max_error(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("clip: image and text features and logits equal OpenAI's reference outputs") {
  if (!have_shared("golden/clip-tiny/model.safetensors")) return;
  torch::NoGradGuard no_grad;
  kclip::CLIP model(kclip::CLIPImpl::load(shared_dir() / "golden/clip-tiny/model.safetensors"));
  const auto& c = model->config();
  CHECK(c.embed_dim == 64);
  CHECK(c.image_size == 64);
  CHECK(c.patch_size == 16);
  CHECK(c.vision_width == 128);
  CHECK(c.vision_layers == 2);
  CHECK(c.vision_heads == 2);
  CHECK(c.text_layers == 2);
  CHECK(c.context_length == 77);
  auto expected = kclip::load_safetensors(shared_dir() / "golden/clip-tiny/expected.safetensors");
  CHECK(max_error(model->encode_image(expected["pixel_values"]), expected["image_features"]) < 1e-4);
  CHECK(max_error(model->encode_text(expected["input_ids"]), expected["text_features"]) < 1e-4);
  auto [per_image, per_text] = model->forward(expected["pixel_values"], expected["input_ids"]);
  CHECK(max_error(per_image, expected["logits_per_image"]) < 1e-3);
  CHECK(max_error(per_text, expected["logits_per_text"]) < 1e-3);
  // The shipped "tiny" config is this model's shape.
  auto named = kclip::CLIPConfig::named("tiny");
  CHECK(named.vision_width == c.vision_width);
  CHECK(named.text_heads == c.text_heads);
}

TEST_CASE("clip: shipped configs build, and bad input is a clear error") {
  for (const char* name : {"ViT-B-32", "ViT-B-16", "ViT-L-14", "tiny", "bench-s"}) {
    INFO(name);
    CHECK_NOTHROW(kclip::CLIPConfig::named(name));
  }
  auto bench = kclip::CLIPConfig::named("bench-s");
  CHECK(bench.vision_heads == 4);
  CHECK(bench.context_length == 32);
  kclip::CLIP model(bench);
  torch::NoGradGuard no_grad;
  CHECK(model->encode_image(torch::randn({2, 3, 64, 64})).sizes() == torch::IntArrayRef{2, 256});
  CHECK(model->encode_text(torch::randint(0, 49408, {2, 32}, torch::kLong)).sizes() == torch::IntArrayRef{2, 256});
  CHECK_THROWS_WITH_AS(model->encode_image(torch::randn({2, 3, 32, 32})), doctest::Contains("expected [batch, 3, 64, 64]"),
                       kclip::ValueError);
  CHECK_THROWS_AS(kclip::CLIPConfig::named("ViT-Z-99"), kclip::ValueError);
  kclip::TensorDict partial;
  for (const auto& p : model->named_parameters())
    if (p.key() != "logit_scale") partial.insert(p.key(), p.value());
  CHECK_THROWS_WITH_AS(model->load_weights(partial, "ckpt"), doctest::Contains("missing [logit_scale]"), kclip::Error);
}

TEST_CASE("clip: OpenAI -> Hugging Face -> OpenAI round trips give identical outputs") {
  if (!have_shared("golden/clip-tiny/model.safetensors")) return;
  torch::NoGradGuard no_grad;
  kclip::testing::TempDir dir;
  kclip::CLIP openai(kclip::CLIPImpl::load(shared_dir() / "golden/clip-tiny/model.safetensors"));
  openai->save(dir / "hf", "hf");
  auto hf_state = kclip::load_safetensors(dir / "hf");
  CHECK(hf_state.contains("vision_model.encoder.layers.1.self_attn.k_proj.weight"));
  CHECK(hf_state["visual_projection.weight"].sizes() == torch::IntArrayRef{64, 128});  // transposed
  CHECK(hf_state["text_model.encoder.layers.0.self_attn.q_proj.bias"].sizes() == torch::IntArrayRef{128});
  kclip::CLIP from_hf(kclip::CLIPImpl::load(dir / "hf"));  // a directory: Hugging Face layout
  CHECK(from_hf->config().vision_heads == 2);
  from_hf->save(dir / "back.safetensors", "openai");
  kclip::CLIP back(kclip::CLIPImpl::load(dir / "back.safetensors"));
  auto expected = kclip::load_safetensors(shared_dir() / "golden/clip-tiny/expected.safetensors");
  for (auto* model : {&from_hf, &back}) {
    CHECK(torch::equal((*model)->encode_image(expected["pixel_values"]), openai->encode_image(expected["pixel_values"])));
    CHECK(torch::equal((*model)->encode_text(expected["input_ids"]), openai->encode_text(expected["input_ids"])));
  }
  CHECK((back->encode_text(expected["input_ids"]) - expected["text_features"]).abs().max().item<double>() < 1e-4);
  auto bad = hf_state;
  bad.erase("text_model.final_layer_norm.bias");
  kclip::save_safetensors(dir / "hf" / "model.safetensors", bad);
  CHECK_THROWS_WITH_AS(kclip::CLIPImpl::load(dir / "hf"), doctest::Contains("text_model.final_layer_norm.bias"),
                       kclip::Error);
  CHECK_THROWS_AS(openai->save(dir / "x", "onnx"), kclip::ValueError);
}

TEST_CASE("clip: bad checkpoints are one error listing every problem, and nothing is loaded") {
  kclip::testing::TempDir dir;
  kclip::CLIP model(kclip::CLIPConfig::named("tiny"));
  kclip::TensorDict state;
  for (const auto& p : model->named_parameters()) state.insert(p.key(), p.value().detach().clone());
  state.erase("visual.ln_post.bias");
  state.insert("visual.extra.weight", torch::zeros({2}));
  state["text_projection"] = torch::zeros({3, 3});
  const torch::Tensor before = model->visual->proj.detach().clone();
  state["visual.proj"] = torch::ones_like(before);
  try {
    model->load_weights(state, "bad.safetensors");
    FAIL("expected an error");
  } catch (const kclip::Error& e) {
    const std::string message = e.what();
    CHECK(message.find("bad.safetensors") != std::string::npos);
    CHECK(message.find("missing [visual.ln_post.bias]") != std::string::npos);
    CHECK(message.find("unexpected [visual.extra.weight]") != std::string::npos);
    CHECK(message.find("text_projection [3, 3] (expected [128, 64])") != std::string::npos);
  }
  CHECK(torch::equal(model->visual->proj, before));  // no partial load
  std::ofstream(dir / "not.safetensors") << "this is not a checkpoint";
  CHECK_THROWS_WITH_AS(kclip::CLIPImpl::load(dir / "not.safetensors"), doctest::Contains("not.safetensors"), kclip::Error);
  CHECK_THROWS_WITH_AS(kclip::CLIPImpl::load(dir / "absent.safetensors"), doctest::Contains("absent.safetensors"), kclip::Error);
}

TEST_CASE("clip: gradient checkpointing gives the same loss and gradients") {
  torch::manual_seed(0);
  kclip::CLIP model(kclip::CLIPConfig::named("tiny"));
  model->train();
  const torch::Tensor pixels = torch::randn({3, 3, 64, 64});
  const torch::Tensor ids = torch::randint(1, 49000, {3, 77}, torch::kLong).index_put_({torch::indexing::Slice(), 9}, 49407);
  auto loss_and_grads = [&](bool checkpoint) {
    model->set_grad_checkpointing(checkpoint);
    model->zero_grad();
    auto [per_image, per_text] = model->forward(pixels, ids);
    const torch::Tensor labels = torch::arange(3);
    const torch::Tensor loss = (torch::cross_entropy_loss(per_image, labels) + torch::cross_entropy_loss(per_text, labels)) / 2;
    loss.backward();
    std::vector<torch::Tensor> grads{loss.detach()};
    for (const auto& p : model->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    return grads;
  };
  const auto plain = loss_and_grads(false);
  const auto checkpointed = loss_and_grads(true);
  REQUIRE(plain.size() == checkpointed.size());
  double worst = 0;
  for (size_t i = 0; i < plain.size(); ++i) worst = std::max(worst, (plain[i] - checkpointed[i]).abs().max().item<double>());
  CHECK(worst < 1e-5);
  // Every block parameter got a gradient through the recomputation.
  CHECK(model->visual->transformer->named_parameters()["resblocks.0.attn.in_proj_weight"].grad().abs().sum().item<double>() > 0);
}

TEST_CASE("clip: inputs follow the model, and CPU bfloat16 autocast stays close to float32") {
  kclip::CLIP model(kclip::CLIPConfig::named("tiny"));
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor pixels = torch::randn({2, 3, 64, 64});
  const torch::Tensor ids = torch::randint(1, 49000, {2, 77}, torch::kLong);
  const torch::Tensor exact = model->encode_image(pixels);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
#else
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
#endif
  const torch::Tensor image = model->encode_image(pixels);
  const torch::Tensor text = model->encode_text(ids);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, false);
#else
  at::autocast::set_cpu_enabled(false);
#endif
  at::autocast::clear_cache();
  CHECK(kclip::testing::dtype_of(image) == "BFloat16");
  CHECK(kclip::testing::dtype_of(text) == "BFloat16");
  const double relative = ((image.to(torch::kFloat) - exact).norm() / exact.norm()).item<double>();
  CHECK(relative < 0.05);
  CHECK(relative > 0);  // it really ran in bfloat16
}
