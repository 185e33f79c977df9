#pragma once
// Llama's tokenizer: a SentencePiece model (tokenizer.model). Ids equal sentencepiece's own encode(). SentencePiece
// is reached through libkclip_sentencepiece (built and installed with kclip; KCLIP_SENTENCEPIECE_SHIM overrides
// where it is looked for).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kclip {

class LlamaTokenizer {
 public:
  // A tokenizer.model file, or a directory holding one (a Hugging Face model directory).
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
};

}  // namespace kclip
