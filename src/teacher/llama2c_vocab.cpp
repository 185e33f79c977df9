// llama2.c's tokenizer.bin read and applied as run.c does (see the header).
#include "teacher/llama2c_vocab.h"

#include <kclip/error.h>

#include "data/csv.h"  // read_text_file

#include <cstring>

namespace kclip::detail {
namespace {

constexpr int64_t kVocabSize = 32000;  // llama2.c's exporter writes the Llama 2 vocabulary; the file has no count
constexpr int64_t kFirstByteId = 3;    // <unk> <s> </s>, then the 256 byte pieces

template <typename T>
T read_at(const std::string& data, size_t& offset, const std::filesystem::path& path) {
  if (offset + sizeof(T) > data.size()) fail("{}: truncated at byte {} (not a llama2.c tokenizer.bin)", path.string(), offset);
  T value;
  std::memcpy(&value, data.data() + offset, sizeof(T));
  offset += sizeof(T);
  return value;
}

bool is_byte(int64_t id) { return id >= kFirstByteId && id < kFirstByteId + 256; }

}  // namespace

Llama2cVocab::Llama2cVocab(const std::filesystem::path& path) {
  const std::string data = read_text_file(path);
  size_t offset = 0;
  const int32_t max_length = read_at<int32_t>(data, offset, path);
  if (max_length <= 0 || max_length > 1024) fail("{}: max piece length {}: not a llama2.c tokenizer.bin", path.string(), max_length);
  for (int64_t id = 0; id < kVocabSize; ++id) {
    const float score = read_at<float>(data, offset, path);
    const int32_t length = read_at<int32_t>(data, offset, path);
    if (length < 0 || length > max_length || offset + static_cast<size_t>(length) > data.size())
      fail("{}: piece {} has length {} (max {}): not a llama2.c tokenizer.bin", path.string(), id, length, max_length);
    pieces_.emplace_back(data, offset, static_cast<size_t>(length));
    scores_.push_back(score);
    offset += static_cast<size_t>(length);
    ids_[pieces_.back()] = id;  // a spelling that is also a byte piece (" ", "a") maps to the later, merged piece
  }
  if (offset != data.size()) fail("{}: {} bytes after the 32000 pieces: not a llama2.c tokenizer.bin", path.string(), data.size() - offset);
}

std::vector<int64_t> Llama2cVocab::encode(const std::string& text) const {
  std::vector<int64_t> tokens;
  if (!text.empty()) tokens.push_back(ids_.at(" "));  // sentencepiece's dummy prefix
  for (size_t i = 0; i < text.size();) {
    size_t j = i + 1;  // one UTF-8 code point: a lead byte and its continuation bytes
    while (j < text.size() && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80 && j - i < 4) ++j;
    const auto it = ids_.find(text.substr(i, j - i));
    if (it != ids_.end()) {
      tokens.push_back(it->second);
    } else {
      for (size_t k = i; k < j; ++k) tokens.push_back(static_cast<unsigned char>(text[k]) + kFirstByteId);
    }
    i = j;
  }
  while (true) {  // merge the best-scoring adjacent pair until none merges
    float best = -1e30f;
    int64_t best_id = -1;
    size_t best_at = 0;
    for (size_t k = 0; k + 1 < tokens.size(); ++k) {
      if (is_byte(tokens[k]) || is_byte(tokens[k + 1])) continue;  // byte fallbacks stay bytes, as in sentencepiece
      const auto it = ids_.find(pieces_[static_cast<size_t>(tokens[k])] + pieces_[static_cast<size_t>(tokens[k + 1])]);
      if (it != ids_.end() && scores_[static_cast<size_t>(it->second)] > best) {
        best = scores_[static_cast<size_t>(it->second)];
        best_id = it->second;
        best_at = k;
      }
    }
    if (best_id < 0) break;
    tokens[best_at] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  return tokens;
}

std::string Llama2cVocab::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  for (int64_t id : ids) {
    if (id < 0 || id >= size()) fail_value("LlamaTokenizer.decode: id {} not in [0, {})", id, size());
    if (id == 1 || id == 2) continue;  // <s>, </s>: control pieces decode to nothing
    if (is_byte(id)) text += static_cast<char>(id - kFirstByteId);  // stored spelled as U+00NN in UTF-8: emit the byte
    else text += id == 0 ? " \xE2\x81\x87 " : pieces_[static_cast<size_t>(id)];  // <unk> as sentencepiece: " ⁇ "
  }
  if (!text.empty() && text[0] == ' ') text.erase(0, 1);  // the dummy prefix
  return text;
}

std::string Llama2cVocab::piece(int64_t id) const {
  if (id < 0 || id >= size()) fail_value("LlamaTokenizer: id {} not in [0, {})", id, size());
  if (is_byte(id)) return fmt::format("<0x{:02X}>", id - kFirstByteId);
  if (id == 0) return "<unk>";
  if (id == 1) return "<s>";
  if (id == 2) return "</s>";
  std::string out;
  for (char c : pieces_[static_cast<size_t>(id)]) out += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
  return out;
}

}  // namespace kclip::detail
