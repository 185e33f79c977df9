#pragma once
// llama2.c's tokenizer.bin (private header): int32 max piece length, then per piece float32 score, int32 length,
// bytes (spaces as ' ', byte pieces <0x00>..<0xFF> as the raw byte). Encoding as run.c does: a dummy-prefix space,
// UTF-8 code points (unknown ones as byte pieces: id = byte + 3), then repeatedly the adjacent pair whose merge is
// the highest-scoring piece. On Meta's reference encodings this gives sentencepiece's ids (tested).
#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

namespace kclip::detail {

class Llama2cVocab {
 public:
  explicit Llama2cVocab(const std::filesystem::path& path);
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  std::string piece(int64_t id) const;  // sentencepiece's spelling: '▁' for spaces, <0xNN> for byte pieces
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int64_t> ids_;
};

}  // namespace kclip::detail
