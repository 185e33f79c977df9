#pragma once
// Llama's tokenizer: a SentencePiece model (tokenizer.model), or llama2.c's tokenizer.bin of the same vocabulary
// (encoded as llama2.c's run.c does, which gives sentencepiece's ids on Meta's reference encodings). Ids equal
// sentencepiece's own encode(). SentencePiece is reached through libkclip_sentencepiece (built and installed with
// kclip; KCLIP_SENTENCEPIECE_SHIM overrides where it is looked for).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kclip {
namespace detail {
class Llama2cVocab;
}

class LlamaTokenizer {
 public:
  // A tokenizer.model file, a llama2.c tokenizer.bin (by its extension), or a directory holding either (a Hugging
  // Face model directory: tokenizer.model first).
  explicit LlamaTokenizer(const std::filesystem::path& path);

  std::vector<int64_t> encode(const std::string& text, bool bos = false, bool eos = false) const;
  std::vector<std::string> encode_as_pieces(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t bos_id() const;
  int64_t eos_id() const;
  int64_t vocab_size() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::shared_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::shared_ptr<const detail::Llama2cVocab> llama2c_;  // set for a tokenizer.bin
};

}  // namespace kclip
