// safetensors against real files in ../shared: a Hugging Face sharded Llama checkpoint (checked value by value
// against the same weights in llama2.c's .bin) and OpenAI-layout CLIP weights in F16.
#include "testing.h"

#include <kclip/safetensors.h>

#include <torch/torch.h>

#include <fstream>
#include <string>
#include <vector>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;
using kclip::testing::dtype_of;
using kclip::testing::TempDir;

namespace {

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `count` float32 values of llama2.c's .bin starting `float_offset` floats after its 7-int header.
torch::Tensor bin_floats(const std::string& bytes, int64_t float_offset, int64_t count) {
  const int64_t start = 7 * 4 + float_offset * 4;
  REQUIRE(static_cast<int64_t>(bytes.size()) >= start + count * 4);
  return torch::from_blob(const_cast<char*>(bytes.data()) + start, {count}, torch::kFloat).clone();
}

}  // namespace

TEST_CASE("safetensors/shared: stories260K's sharded HF checkpoint has the documented tensors") {
  if (!have_shared("models/stories260K/hf/model.safetensors.index.json")) return;
  const auto dir = shared_dir() / "models/stories260K/hf";
  kclip::TensorDict t = kclip::load_safetensors(dir);  // directory -> index -> both shards
  CHECK(t.size() == 48);  // embed, lm_head, final norm + 5 layers x 9 tensors, over 2 shards
  CHECK(t["model.embed_tokens.weight"].sizes() == torch::IntArrayRef{512, 64});
  CHECK(t["lm_head.weight"].sizes() == torch::IntArrayRef{512, 64});
  CHECK(t["model.norm.weight"].sizes() == torch::IntArrayRef{64});
  for (int layer = 0; layer < 5; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    CHECK(t[p + "self_attn.q_proj.weight"].sizes() == torch::IntArrayRef{64, 64});
    CHECK(t[p + "self_attn.k_proj.weight"].sizes() == torch::IntArrayRef{32, 64});  // 4 kv heads x 8
    CHECK(t[p + "self_attn.v_proj.weight"].sizes() == torch::IntArrayRef{32, 64});
    CHECK(t[p + "self_attn.o_proj.weight"].sizes() == torch::IntArrayRef{64, 64});
    CHECK(t[p + "mlp.gate_proj.weight"].sizes() == torch::IntArrayRef{172, 64});
    CHECK(t[p + "mlp.up_proj.weight"].sizes() == torch::IntArrayRef{172, 64});
    CHECK(t[p + "mlp.down_proj.weight"].sizes() == torch::IntArrayRef{64, 172});
    CHECK(t[p + "input_layernorm.weight"].sizes() == torch::IntArrayRef{64});
  }
  for (const auto& item : t) CHECK(dtype_of(item.value()) == "Float");
  CHECK(kclip::load_safetensors_metadata(dir).at("total_size") == "1171200");
  CHECK(kclip::load_safetensors_metadata(dir).at("format") == "pt");

  SUBCASE("values equal the same weights in llama2.c's .bin (an independent file)") {
    const std::string bin = read_bytes(shared_dir() / "models/stories260K/stories260K.bin");
    // .bin order: token embedding [vocab, dim], then rms_att weights [layers, dim], ...
    CHECK(torch::equal(t["model.embed_tokens.weight"].flatten(), bin_floats(bin, 0, 512 * 64)));
    for (int layer = 0; layer < 5; ++layer)
      CHECK(torch::equal(t["model.layers." + std::to_string(layer) + ".input_layernorm.weight"],
                         bin_floats(bin, 512 * 64 + layer * 64, 64)));
  }
  SUBCASE("re-saving a shard reproduces the reference writer's file byte for byte") {
    TempDir tmp;
    for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
      kclip::SafetensorsFile file(dir / shard);
      kclip::save_safetensors(tmp / shard, file.load(), file.metadata());
      CHECK(read_bytes(tmp / shard) == read_bytes(dir / shard));
    }
  }
}

TEST_CASE("safetensors/shared: golden clip-tiny has OpenAI's layout in F16") {
  if (!have_shared("golden/clip-tiny/model.safetensors")) return;
  const auto path = shared_dir() / "golden/clip-tiny/model.safetensors";
  kclip::TensorDict t = kclip::load_safetensors(path);
  for (const auto& item : t) CHECK(dtype_of(item.value()) == "Half");
  CHECK(t["token_embedding.weight"].sizes() == torch::IntArrayRef{49408, 128});
  CHECK(t["positional_embedding"].sizes() == torch::IntArrayRef{77, 128});
  CHECK(t["text_projection"].sizes() == torch::IntArrayRef{128, 64});
  CHECK(t["logit_scale"].sizes() == torch::IntArrayRef{1});
  CHECK(t["visual.conv1.weight"].sizes() == torch::IntArrayRef{128, 3, 16, 16});
  CHECK(t["visual.positional_embedding"].sizes() == torch::IntArrayRef{17, 128});  // (64/16)^2 + class token
  CHECK(t["visual.proj"].sizes() == torch::IntArrayRef{128, 64});
  CHECK(t["visual.transformer.resblocks.1.attn.in_proj_weight"].sizes() == torch::IntArrayRef{384, 128});
  CHECK(t["transformer.resblocks.1.mlp.c_fc.weight"].sizes() == torch::IntArrayRef{512, 128});
  CHECK(kclip::load_safetensors_metadata(path).at("format") == "openai-clip");

  TempDir tmp;  // mixed-free F16 file: our writer reproduces it exactly too
  kclip::save_safetensors(tmp / "m.safetensors", t, kclip::load_safetensors_metadata(path));
  CHECK(read_bytes(tmp / "m.safetensors") == read_bytes(path));
}

TEST_CASE("safetensors/shared: golden expected outputs hold mixed dtypes") {
  if (!have_shared("golden/clip-tiny/expected.safetensors")) return;
  kclip::TensorDict t = kclip::load_safetensors(shared_dir() / "golden/clip-tiny/expected.safetensors");
  CHECK(dtype_of(t["input_ids"]) == "Long");
  CHECK(t["input_ids"].sizes() == torch::IntArrayRef{12, 77});
  CHECK(t["pixel_values_224"].sizes() == torch::IntArrayRef{4, 3, 224, 224});
  CHECK(t["image_features"].sizes() == torch::IntArrayRef{4, 64});
  CHECK(t["logits_per_text"].sizes() == torch::IntArrayRef{12, 4});
  CHECK(t["input_ids"][0][0].item<int64_t>() == 49406);  // <|startoftext|>
}
