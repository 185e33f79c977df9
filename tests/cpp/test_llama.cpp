// Llama against llama2.c's run.c (../shared/models/stories260K): logits and final hidden states from both the
// .bin and the Hugging Face shards, greedy decoding, padded batches, and loader errors.
#include "testing.h"

#include <kclip/error.h>
#include <kclip/llama.h>
#include <kclip/safetensors.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;
using kclip::testing::TempDir;

namespace {

const char* kModel = "models/stories260K";

nlohmann::json reference() {
  std::ifstream in(shared_dir() / kModel / "runc_reference.json");
  return nlohmann::json::parse(in);
}

torch::Tensor to_tensor(const nlohmann::json& rows) {
  std::vector<torch::Tensor> out;
  for (const auto& row : rows) out.push_back(torch::tensor(row.get<std::vector<float>>()));
  return torch::stack(out);
}

torch::Tensor ids_of(const nlohmann::json& seq) {
  return torch::tensor(seq["ids"].get<std::vector<int64_t>>(), torch::kLong).unsqueeze(0);
}

double max_error(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("llama: logits and final hidden states equal run.c's, from the .bin and from the HF shards") {
  if (!have_shared(std::string(kModel) + "/runc_reference.json")) return;
  torch::NoGradGuard no_grad;
  auto ref = reference();
  for (const auto& source : {shared_dir() / kModel / "stories260K.bin", shared_dir() / kModel / "hf"}) {
    kclip::Llama model(kclip::LlamaImpl::load(source));
    CHECK(model->config().num_key_value_heads == 4);
    CHECK(model->config().tie_word_embeddings);
    for (const auto& seq : ref["sequences"]) {
      INFO(source.string() << " ids " << seq["ids"].dump());
      torch::Tensor ids = ids_of(seq);
      CHECK(max_error(model->logits(ids)[0], to_tensor(seq["logits"])) < 1e-4);
      CHECK(max_error(model->hidden_states(ids)[0], to_tensor(seq["final_hidden"])) < 1e-4);
    }
  }
}

TEST_CASE("llama: the .bin's permuted q/k weights are the HF checkpoint's exactly") {
  if (!have_shared(std::string(kModel) + "/hf")) return;
  kclip::Llama from_bin(kclip::LlamaImpl::load(shared_dir() / kModel / "stories260K.bin"));
  kclip::TensorDict hf = kclip::load_safetensors(shared_dir() / kModel / "hf");
  for (const auto& p : from_bin->named_parameters()) {
    INFO(p.key());
    CHECK(torch::equal(p.value(), hf[p.key()]));
  }
}

TEST_CASE("llama: greedy decoding from BOS reproduces run.c's 120 tokens") {
  if (!have_shared(std::string(kModel) + "/runc_reference.json")) return;
  torch::NoGradGuard no_grad;
  auto expected = reference()["greedy_from_bos"].get<std::vector<int64_t>>();
  kclip::Llama model(kclip::LlamaImpl::load(shared_dir() / kModel / "hf"));
  std::vector<int64_t> tokens{expected[0]};
  while (tokens.size() < expected.size()) {
    torch::Tensor logits = model->logits(torch::tensor(tokens, torch::kLong).unsqueeze(0));
    tokens.push_back(logits[0][-1].argmax().item<int64_t>());
  }
  CHECK(tokens == expected);
}

TEST_CASE("llama: a right-padded batch gives each sequence's rows as computed alone") {
  if (!have_shared(std::string(kModel) + "/hf")) return;
  torch::NoGradGuard no_grad;
  kclip::Llama model(kclip::LlamaImpl::load(shared_dir() / kModel / "hf"));
  std::vector<std::vector<int64_t>> seqs = {{1, 20, 30}, {1, 5, 6, 7, 8, 9, 10}, {1}};
  torch::Tensor ids = torch::zeros({3, 7}, torch::kLong), mask = torch::zeros({3, 7}, torch::kLong);
  for (int64_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < seqs[i].size(); ++j) ids[i][j] = seqs[i][j], mask[i][j] = 1;
  for (int64_t layer : {-1, 0, 3}) {
    torch::Tensor batch = model->hidden_states(ids, mask, layer);
    for (int64_t i = 0; i < 3; ++i) {
      const int64_t n = static_cast<int64_t>(seqs[i].size());
      torch::Tensor alone = model->hidden_states(torch::tensor(seqs[i], torch::kLong).unsqueeze(0), {}, layer)[0];
      INFO("sequence " << i << " layer " << layer);
      CHECK(max_error(batch[i].narrow(0, 0, n), alone) < 1e-4);
    }
  }
}

TEST_CASE("llama: configs and checkpoints that do not fit are one clear error") {
  TempDir dir;
  std::ofstream(dir / "config.json") << R"({"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10})";
  kclip::Llama model(kclip::LlamaConfig::from_json(dir / "config.json"));
  kclip::TensorDict weights;
  for (const auto& p : model->named_parameters()) weights.insert(p.key(), torch::zeros_like(p.value()));
  model->load_weights(weights, "ok");  // fits

  kclip::TensorDict broken;
  for (const auto& p : model->named_parameters())
    if (p.key() != "model.norm.weight")
      broken.insert(p.key(), p.key() == "model.embed_tokens.weight" ? torch::zeros({11, 8}) : torch::zeros_like(p.value()));
  broken.insert("model.extra", torch::zeros({1}));
  CHECK_THROWS_WITH_AS(model->load_weights(broken, "ckpt"),
                       doctest::Contains("missing [model.norm.weight]; unexpected [model.extra]; misshaped "
                                         "[model.embed_tokens.weight [11, 8] (expected [10, 8])]"),
                       kclip::Error);

  std::ofstream(dir / "bad.json") << R"({"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
    "num_attention_heads": 3, "vocab_size": 10})";
  CHECK_THROWS_WITH_AS(kclip::LlamaConfig::from_json(dir / "bad.json"), doctest::Contains("must split into"),
                       kclip::Error);
  std::ofstream(dir / "missing.json") << R"({"hidden_size": 8})";
  CHECK_THROWS_WITH_AS(kclip::LlamaConfig::from_json(dir / "missing.json"),
                       doctest::Contains("field 'intermediate_size' is missing"), kclip::Error);
  std::ofstream(dir / "short.bin") << "abc";
  CHECK_THROWS_WITH_AS(kclip::LlamaImpl::load_llama2c(dir / "short.bin"), doctest::Contains("7-int header"),
                       kclip::Error);
  CHECK_THROWS_AS(model->logits(torch::tensor({{1, 10}}, torch::kLong)), kclip::ValueError);  // id 10 >= vocab
}
