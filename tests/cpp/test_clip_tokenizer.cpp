// ClipTokenizer against the ids of OpenAI's clip/simple_tokenizer.py (../shared/golden/clip-tiny/tokens.json).
#include "testing.h"

#include <kclip/clip_tokenizer.h>
#include <kclip/error.h>
#include <kclip/safetensors.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;

namespace {

std::filesystem::path vocab_path() { return shared_dir() / "tokenizers/clip/bpe_simple_vocab_16e6.txt.gz"; }

std::vector<int64_t> row_ids(const torch::Tensor& row) {
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

}  // namespace

TEST_CASE("clip tokenizer: ids equal OpenAI's for the reference captions (SOT, EOT, padding, truncation)") {
  if (!have_shared("golden/clip-tiny/tokens.json") || !have_shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz"))
    return;
  std::ifstream in(shared_dir() / "golden/clip-tiny/tokens.json");
  const auto reference = nlohmann::json::parse(in);
  const auto captions = reference.at("captions").get<std::vector<std::string>>();
  REQUIRE(captions.size() == 12);

  kclip::ClipTokenizer tokenizer(vocab_path());
  CHECK(tokenizer.vocab_size() == 49408);
  CHECK(tokenizer.sot_token_id() == 49406);
  CHECK(tokenizer.eot_token_id() == 49407);
  const torch::Tensor ids = tokenizer(captions);
  CHECK(ids.sizes() == torch::IntArrayRef({12, 77}));
  CHECK(kclip::testing::dtype_of(ids) == "Long");
  auto expected = kclip::load_safetensors(shared_dir() / "golden/clip-tiny/expected.safetensors");
  CHECK(torch::equal(ids, expected["input_ids"].to(torch::kLong)));
  for (size_t n = 0; n < captions.size(); ++n) {
    INFO("caption ", n, ": ", captions[n]);
    auto expected_row = reference.at("ids")[n].get<std::vector<int64_t>>();
    expected_row.resize(77, 0);  // tokens.json lists the ids before padding
    CHECK(row_ids(ids[n]) == expected_row);
  }
  CHECK(row_ids(ids[10].slice(0, 0, 3)) == std::vector<int64_t>{49406, 49407, 0});  // the empty caption
}

TEST_CASE("clip tokenizer: encode and decode") {
  if (!have_shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz")) return;
  kclip::ClipTokenizer tokenizer(vocab_path());
  const auto ids = tokenizer.encode("A photo of a cat.");
  CHECK(ids.size() == 6);  // a, photo, of, a, cat, .
  CHECK(tokenizer.decode(ids) == "a photo of a cat . ");
  CHECK(tokenizer.encode("") == std::vector<int64_t>{});
  // The special tokens written in text map to their ids, as in OpenAI's pattern.
  CHECK(tokenizer.encode("<|startoftext|>") == std::vector<int64_t>{49406});
  // Non-ASCII text goes through byte-level BPE and decodes back.
  CHECK(tokenizer.decode(tokenizer.encode("café 東京 🙂")) == "café 東京 🙂 ");
  // A shorter row than the default, and the default length.
  CHECK(tokenizer({"a cat"}, 5).sizes() == torch::IntArrayRef({1, 5}));
  CHECK(tokenizer({"a cat"}).size(1) == 77);
  // Truncation keeps EOT last.
  CHECK(row_ids(tokenizer({"a photo of a cat"}, 4)[0]) ==
        std::vector<int64_t>{49406, tokenizer.encode("a")[0], tokenizer.encode("photo")[0], 49407});
}

TEST_CASE("clip tokenizer: ftfy, HTML, whitespace and case normalisation as OpenAI's basic_clean") {
  if (!have_shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz")) return;
  kclip::ClipTokenizer tokenizer(vocab_path());
  auto same = [&](const std::string& a, const std::string& b) { return tokenizer.encode(a) == tokenizer.encode(b); };
  CHECK(same("don\u2019t \u201cstop\u201d", "don't \"stop\""));  // ftfy uncurls quotes
  CHECK(same("\uFF21\uFF22\uFF23\u3000\uFF11", "abc 1"));       // full-width forms
  CHECK(same("\uFB01ne \uFB02ag", "fine flag"));                   // Latin ligatures
  CHECK(same("\u0149", "'n"));                                       // ŉ -> ʼn -> 'n
  CHECK(same("\u01C6 \uFB05", "d\u017e \u017ft"));                   // digraphs, ﬅ keeps its long s
  CHECK(!same("\uFB05", "st"));
  CHECK(same("a\u0085b", "a\u2026b"));                              // C1 controls read as Windows-1252
  CHECK(same("cafe\u0301", "caf\u00e9"));                          // NFC
  CHECK(same("a\x1b[31mred\x1b[0m", "ared"));                     // terminal escapes removed
  CHECK(same("&amp;amp;amp; &lt;", "& <"));                        // ftfy repeats its unescaping
  // ... but not in text with '<': there only OpenAI's html.unescape twice, leaving "&amp;"
  auto joined = tokenizer.encode("x < &");
  for (const char* piece : {"amp", ";"}) {
    const auto ids = tokenizer.encode(piece);
    joined.insert(joined.end(), ids.begin(), ids.end());
  }
  CHECK(tokenizer.encode("x < &amp;amp;amp;") == joined);
  CHECK(same("&ampfoo &notit; &#x41;&#66", "&foo \u00acit; ab"));   // names without ';', numeric references
  CHECK(same("  lots \t of\n\nspace ", "lots of space"));
  CHECK(same("\u039f\u0394\u039f\u03a3 \u03a3", "\u03bf\u03b4\u03bf\u03c2 \u03c3"));  // final sigma
  CHECK(!same("\u0130", "i"));                                       // İ lowers to i + U+0307
  CHECK(same("\u0130", "i\u0307"));
}

TEST_CASE("clip tokenizer: errors name the file or the text") {
  kclip::testing::TempDir dir;
  CHECK_THROWS_WITH_AS(kclip::ClipTokenizer(dir / "missing.txt.gz"),
                       doctest::Contains("missing.txt.gz: CLIP BPE vocabulary not found"), kclip::Error);
  {
    std::ofstream(dir / "short.txt") << "#version: 0.2\ni n\n";
  }
  CHECK_THROWS_WITH_AS(kclip::ClipTokenizer(dir / "short.txt"), doctest::Contains("short.txt: 3 lines"), kclip::Error);
  {
    std::ofstream(dir / "broken.gz", std::ios::binary) << std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage", 18);
  }
  CHECK_THROWS_AS(kclip::ClipTokenizer(dir / "broken.gz"), kclip::Error);
  std::filesystem::create_directories(dir / "hf");
  {
    std::ofstream(dir / "hf/vocab.json") << "{\"a\": 0, \"b\": 7}";
    std::ofstream(dir / "hf/merges.txt") << "#version: 0.2\n";
  }
  CHECK_THROWS_WITH_AS(kclip::ClipTokenizer(dir / "hf"), doctest::Contains("token 'b' has id 7"), kclip::Error);
  CHECK_THROWS_AS(kclip::ClipTokenizer(dir / "missing.txt.gz", 1), kclip::ValueError);

  if (!have_shared("tokenizers/clip/bpe_simple_vocab_16e6.txt.gz")) return;
  kclip::ClipTokenizer tokenizer(vocab_path());
  CHECK_THROWS_WITH_AS(tokenizer({"fine", std::string("bad \xff byte")}), doctest::Contains("texts[1] is not valid UTF-8 (at byte 4)"),
                       kclip::ValueError);
  CHECK_THROWS_AS(tokenizer.decode({49408}), kclip::ValueError);
}
