#pragma once
// OpenAI CLIP's byte-level BPE tokenizer (an exact port of clip/simple_tokenizer.py, as open_clip's
// SimpleTokenizer): ftfy-style fixes, HTML unescaped twice, whitespace collapsed, lower-cased, split by OpenAI's
// pattern with Unicode letter / number classes (utf8proc), then BPE over UTF-8 bytes. Checked against the ids of
// OpenAI's code (tests/cpp/test_clip_tokenizer.cpp).
//
// The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text), or a Hugging Face tokenizer
// directory (vocab.json + merges.txt). Without a path, ClipTokenizer::default_vocab_path() is used: the file
// `scripts/fetch-assets.sh` (run by `make`) puts in kclip's cache directory.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace kclip {

class ClipTokenizer {
 public:
  // `path`: a bpe_simple_vocab_16e6.txt[.gz] file, or a directory with vocab.json + merges.txt, or with the
  // OpenAI file; empty = default_vocab_path(). `context_length`: the default length of operator()'s rows.
  explicit ClipTokenizer(const std::filesystem::path& path = {}, int64_t context_length = 77);

  // $KCLIP_CLIP_VOCAB if set, else ${XDG_CACHE_HOME:-~/.cache}/kclip/bpe_simple_vocab_16e6.txt.gz.
  static std::filesystem::path default_vocab_path();

  // BPE ids of `text`, without <|startoftext|> / <|endoftext|>. Text must be UTF-8 (else kclip::ValueError).
  std::vector<int64_t> encode(const std::string& text) const;
  // Ids back to text ('</w>' becomes a space, as OpenAI's decode).
  std::string decode(const std::vector<int64_t>& ids) const;
  // int64 [N, context_length]: <|startoftext|> ids <|endoftext|>, zero padded; longer texts are truncated with
  // <|endoftext|> kept in the last position (open_clip's tokenize). context_length <= 0 uses the default.
  at::Tensor operator()(const std::vector<std::string>& texts, int64_t context_length = 0) const;

  int64_t sot_token_id() const { return sot_token_id_; }
  int64_t eot_token_id() const { return eot_token_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(decoder_.size()); }
  int64_t context_length() const { return context_length_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::vector<int64_t> bpe(const std::string& token) const;  // a byte-encoded word -> ids, cached
  std::vector<std::string> merge_pairs(std::vector<std::string> symbols) const;
  std::vector<int64_t> encode_named(const std::string& text, const std::string& what) const;

  std::filesystem::path path_;
  int64_t context_length_;
  std::unordered_map<std::string, int64_t> encoder_;      // BPE symbol -> id
  std::vector<std::string> decoder_;                      // id -> BPE symbol
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "first second" -> rank
  std::vector<std::string> byte_encoder_;                 // byte -> its printable stand-in (UTF-8)
  std::unordered_map<std::string, uint8_t> byte_decoder_;
  int64_t sot_token_id_ = -1, eot_token_id_ = -1;
  struct Cache;
  std::shared_ptr<Cache> cache_;  // word -> ids, shared by copies, guarded by a mutex
};

}  // namespace kclip
