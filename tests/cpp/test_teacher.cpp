// LlamaTokenizer against sentencepiece's reference encodings, and LlamaTeacher's pooling and batching.
#include "small_llama.h"
#include "testing.h"

#include <kclip/error.h>
#include <kclip/teacher.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;

namespace {

std::shared_ptr<kclip::LlamaTeacher> stories_teacher(kclip::LlamaTeacherOptions options) {
  auto path = shared_dir() / "models/stories260K/hf";
  return std::make_shared<kclip::LlamaTeacher>(kclip::Llama(kclip::LlamaImpl::load(path)), nullptr, options,
                                               kclip::checkpoint_fingerprint(path));
}

const std::vector<std::vector<int64_t>> kCaptions = {{1, 20, 30, 40}, {1, 5}, {1, 7, 8, 9, 10, 11, 12, 13}, {1, 99, 98}};

}  // namespace

TEST_CASE("teacher: LlamaTokenizer reproduces sentencepiece's reference encodings") {
  if (!have_shared("tokenizers/llama2/reference_encodings.json")) return;
  std::ifstream in(shared_dir() / "tokenizers/llama2/reference_encodings.json");
  auto ref = nlohmann::json::parse(in);
  kclip::LlamaTokenizer tok(shared_dir() / "tokenizers/llama2");  // the directory finds tokenizer.model
  CHECK(tok.vocab_size() == 32000);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  REQUIRE(ref["cases"].size() == 13);
  for (const auto& c : ref["cases"]) {
    const auto text = c["text"].get<std::string>();
    INFO(text);
    CHECK(tok.encode(text) == c["ids"].get<std::vector<int64_t>>());
    CHECK(tok.encode_as_pieces(text) == c["pieces"].get<std::vector<std::string>>());
    auto with = tok.encode(text, true, true);
    CHECK(with.front() == 1);
    CHECK(with.back() == 2);
  }
  CHECK_THROWS_AS(kclip::LlamaTokenizer(shared_dir() / "tokenizers/clip"), kclip::Error);
}

TEST_CASE("teacher: pooling follows the definitions and ignores padding, and batching does not change results") {
  if (!have_shared("models/stories260K/hf")) return;
  torch::NoGradGuard no_grad;
  for (std::string pooling : {"mean", "last", "first"}) {
    for (int64_t layer : {-1, 2}) {
      INFO(pooling << " layer " << layer);
      auto opts = kclip::LlamaTeacherOptions().pooling(pooling).layer(layer).max_length(16);
      auto one_batch = stories_teacher(opts.token_budget(1024))->embed_ids(kCaptions);
      auto one_by_one = stories_teacher(opts.token_budget(16))->embed_ids(kCaptions);  // a caption per batch
      CHECK_MESSAGE(torch::allclose(one_batch, one_by_one, 0, 1e-4), (one_batch - one_by_one).abs().amax(1));
      auto teacher = stories_teacher(opts);
      for (std::size_t i = 0; i < kCaptions.size(); ++i) {
        auto ids = torch::tensor(kCaptions[i], torch::kLong).unsqueeze(0);
        auto h = teacher->model()->hidden_states(ids, {}, layer)[0];
        auto expected = pooling == "mean" ? h.mean(0) : pooling == "first" ? h[0] : h[-1];
        CHECK_MESSAGE(torch::allclose(one_batch[i], expected, 0, 1e-4), i << ": " << (one_batch[i] - expected).abs().max());
      }
    }
  }
  auto normalized = stories_teacher(kclip::LlamaTeacherOptions().normalize(true))->embed_ids(kCaptions);
  CHECK(torch::allclose(normalized.norm(2, {1}), torch::ones({4}), 0, 1e-5));
  auto truncated = stories_teacher(kclip::LlamaTeacherOptions().max_length(2))->embed_ids(kCaptions);
  auto first_two = stories_teacher(kclip::LlamaTeacherOptions())->embed_ids({{1, 20}});
  CHECK(torch::allclose(truncated[0], first_two[0], 0, 1e-4));
}

TEST_CASE("teacher: ids name the checkpoint and the settings") {
  if (!have_shared("models/stories260K/hf")) return;
  auto a = stories_teacher(kclip::LlamaTeacherOptions())->id();
  auto b = stories_teacher(kclip::LlamaTeacherOptions().pooling("last"))->id();
  CHECK(a != b);
  CHECK(a.find("pooling=mean") != std::string::npos);
  CHECK(a.find("hf:") == 0 + a.find("hf:"));  // the fingerprint names the directory
  CHECK(kclip::checkpoint_fingerprint(shared_dir() / "models/stories260K/hf") !=
        kclip::checkpoint_fingerprint(shared_dir() / "models/stories260K/stories260K.bin"));
  CHECK_THROWS_AS(stories_teacher(kclip::LlamaTeacherOptions().pooling("max")), kclip::ValueError);
  CHECK_THROWS_AS(stories_teacher(kclip::LlamaTeacherOptions())->embed({"text"}), kclip::ValueError);  // no tokenizer
}

TEST_CASE("teacher: captions end to end with Meta's tokenizer on a random-weight Llama") {
  if (!have_shared("tokenizers/llama2/tokenizer.model")) return;
  kclip::Llama model = kclip::testing::small_random_llama();
  auto tok = std::make_shared<kclip::LlamaTokenizer>(shared_dir() / "tokenizers/llama2/tokenizer.model");
  kclip::LlamaTeacher batched(model, tok, kclip::LlamaTeacherOptions().max_length(64).token_budget(256), "random");
  kclip::LlamaTeacher single(model, tok, kclip::LlamaTeacherOptions().max_length(64).token_budget(64), "random");
  std::vector<std::string> captions = {"A man in a red shirt climbs a rock wall .", "a photo of a cat.", "",
                                       "Two dogs run through the snow ."};
  auto a = batched.embed(captions), b = single.embed(captions);
  CHECK(a.sizes() == torch::IntArrayRef{4, 16});
  CHECK(torch::allclose(a, b, 0, 1e-4));
  CHECK(torch::allclose(a[1], batched.embed({"a photo of a cat."})[0], 0, 1e-4));  // order and determinism
}
