// OpenAI CLIP's SimpleTokenizer: vocabulary loading, byte-level BPE, encode / decode / batch tokenisation.
#include <kclip/clip_tokenizer.h>
#include <kclip/error.h>

#include "clip_text.h"
#include "core/model_files.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <zlib.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <queue>

#include <utf8proc.h>

namespace kclip {
namespace {

constexpr const char* kOpenAIVocabName = "bpe_simple_vocab_16e6.txt.gz";
constexpr size_t kOpenAIMerges = 49152 - 256 - 2;  // the merges OpenAI's vocabulary keeps (lines 1..48894)
constexpr size_t kMaxCachedWords = 1 << 18;

// OpenAI's bytes_to_unicode(): every byte gets a printable code point (printable Latin-1 bytes keep theirs), in
// OpenAI's order, which is also the order of the first 256 vocabulary entries.
std::vector<std::pair<uint8_t, char32_t>> bytes_to_unicode() {
  std::vector<std::pair<uint8_t, char32_t>> table;
  std::vector<bool> printable(256, false);
  for (int b = 0; b < 256; ++b)
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
      printable[b] = true;
      table.emplace_back(static_cast<uint8_t>(b), static_cast<char32_t>(b));
    }
  char32_t next = 256;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) table.emplace_back(static_cast<uint8_t>(b), next++);
  return table;
}

// The whole file, gunzipped when it is gzip (zlib reads plain files through unchanged).
std::string read_maybe_gzip(const std::filesystem::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) fail("{}: cannot open", path.string());
  std::string data;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
  int code = Z_OK;
  const std::string message = n < 0 ? gzerror(file, &code) : "";
  gzclose(file);
  if (n < 0) fail("{}: cannot decompress: {}", path.string(), message);
  return data;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return lines;
}

// "a b" -> {"a", "b"} (Python's str.split(): runs of whitespace, none at the ends).
std::vector<std::string> split_words(const std::string& line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    size_t j = i;
    while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

std::vector<std::string> utf8_chars(const std::string& text) {
  std::vector<std::string> chars;
  for (char32_t c : clip_text::decode_utf8(text, "BPE symbol")) {
    std::string s;
    clip_text::append_utf8(s, c);
    chars.push_back(std::move(s));
  }
  return chars;
}

}  // namespace

struct ClipTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int64_t>> words;
};

std::filesystem::path ClipTokenizer::default_vocab_path() {
  if (const char* env = std::getenv("KCLIP_CLIP_VOCAB"); env && *env) return env;
  std::filesystem::path cache;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) cache = xdg;
  else if (const char* home = std::getenv("HOME"); home && *home) cache = std::filesystem::path(home) / ".cache";
  else cache = std::filesystem::temp_directory_path();
  return cache / "kclip" / kOpenAIVocabName;
}

ClipTokenizer::ClipTokenizer(const std::filesystem::path& path, int64_t context_length)
    : path_(path.empty() ? default_vocab_path() : path), context_length_(context_length),
      cache_(std::make_shared<Cache>()) {
  if (context_length < 2) fail_value("ClipTokenizer: context_length {} leaves no room for SOT and EOT", context_length);
  const auto table = bytes_to_unicode();
  byte_encoder_.resize(256);
  for (const auto& [byte, code] : table) {
    std::string s;
    clip_text::append_utf8(s, code);
    byte_encoder_[byte] = s;
    byte_decoder_[s] = byte;
  }

  std::filesystem::path file = path_;
  if (std::filesystem::is_directory(path_) && std::filesystem::exists(path_ / kOpenAIVocabName))
    file = path_ / kOpenAIVocabName;
  const bool hf = std::filesystem::is_directory(file);
  if (!hf && !std::filesystem::exists(file)) {
    fail("{}: CLIP BPE vocabulary not found (expected OpenAI's {} or a directory with vocab.json + merges.txt; "
         "scripts/fetch-assets.sh downloads it to {}, KCLIP_CLIP_VOCAB points elsewhere)",
         file.string(), kOpenAIVocabName, default_vocab_path().string());
  }

  std::vector<std::string> merge_lines;
  if (hf) {
    const nlohmann::json vocab = detail::read_json_file(file / "vocab.json");
    if (!vocab.is_object()) fail("{}: expected a JSON object of token -> id", (file / "vocab.json").string());
    decoder_.resize(vocab.size());
    for (const auto& [token, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= static_cast<int64_t>(vocab.size()))
        fail("{}: token '{}' has id {}: expected 0..{}", (file / "vocab.json").string(), token, id.dump(), vocab.size() - 1);
      encoder_[token] = id.get<int64_t>();
      decoder_[id.get<int64_t>()] = token;
    }
    const auto lines = split_lines(read_maybe_gzip(file / "merges.txt"));
    for (size_t i = 0; i < lines.size(); ++i)
      if (!(i == 0 && lines[i].rfind("#version", 0) == 0) && !lines[i].empty()) merge_lines.push_back(lines[i]);
    file = file / "merges.txt";
  } else {
    const auto lines = split_lines(read_maybe_gzip(file));
    if (lines.size() < kOpenAIMerges + 1)
      fail("{}: {} lines: expected a header line and at least {} BPE merges", file.string(), lines.size(), kOpenAIMerges);
    merge_lines.assign(lines.begin() + 1, lines.begin() + 1 + kOpenAIMerges);
    // vocab = bytes, bytes + '</w>', merges, the two special tokens (OpenAI's order)
    for (const auto& [byte, code] : table) decoder_.push_back(byte_encoder_[byte]);
    for (const auto& [byte, code] : table) decoder_.push_back(byte_encoder_[byte] + "</w>");
  }

  for (size_t rank = 0; rank < merge_lines.size(); ++rank) {
    const auto parts = split_words(merge_lines[rank]);
    if (parts.size() != 2)
      fail("{}: merge {} is '{}': expected two symbols separated by a space", file.string(), rank + 1, merge_lines[rank]);
    merge_ranks_.emplace(parts[0] + " " + parts[1], static_cast<int32_t>(rank));
    if (!hf) decoder_.push_back(parts[0] + parts[1]);
  }
  if (!hf) {
    decoder_.push_back("<|startoftext|>");
    decoder_.push_back("<|endoftext|>");
    for (size_t id = 0; id < decoder_.size(); ++id) encoder_.emplace(decoder_[id], static_cast<int64_t>(id));
  }
  for (const char* special : {"<|startoftext|>", "<|endoftext|>"})
    if (!encoder_.count(special)) fail("{}: the vocabulary has no {} token", path_.string(), special);
  sot_token_id_ = encoder_.at("<|startoftext|>");
  eot_token_id_ = encoder_.at("<|endoftext|>");
  for (const auto& symbol : byte_encoder_)
    if (!encoder_.count(symbol) || !encoder_.count(symbol + "</w>"))
      fail("{}: the vocabulary lacks the byte symbol '{}' (with and without </w>)", path_.string(), symbol);
}

// OpenAI's bpe() loop: while some adjacent pair is in the merge table, merge every non-overlapping occurrence of
// the lowest-ranked one, left to right. Done in rounds over a heap of candidate pairs and a linked list of symbols
// (O(n log n) instead of a rescan per merge: a 50000-letter word took 7 s, and grows quadratically). A merged
// symbol never re-forms the pair just merged, and pairs created in a round join the heap after it, as OpenAI
// recomputes its pairs between rounds, so the rounds are exactly OpenAI's iterations.
std::vector<std::string> ClipTokenizer::merge_pairs(std::vector<std::string> symbols) const {
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  auto rank_at = [&](int left) {  // rank of the pair starting at `left`, INT32_MAX if none
    if (left < 0 || !alive[left] || next[left] < 0) return INT32_MAX;
    auto it = merge_ranks_.find(symbols[left] + " " + symbols[next[left]]);
    return it == merge_ranks_.end() ? INT32_MAX : it->second;
  };
  using Candidate = std::pair<int32_t, int>;  // (rank, left position): left to right within a rank
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  for (int i = 0; i + 1 < n; ++i)
    if (const int32_t rank = rank_at(i); rank != INT32_MAX) heap.emplace(rank, i);
  std::vector<int> touched;
  while (!heap.empty()) {
    const int32_t rank = heap.top().first;
    touched.clear();
    while (!heap.empty() && heap.top().first == rank) {
      const int left = heap.top().second;
      heap.pop();
      if (rank_at(left) != rank) continue;  // merged away or changed earlier in this round
      const int right = next[left];
      symbols[left] += symbols[right];
      alive[right] = false;
      next[left] = next[right];
      if (next[right] >= 0) prev[next[right]] = left;
      touched.push_back(left);
      if (prev[left] >= 0) touched.push_back(prev[left]);
    }
    for (int left : touched)
      if (const int32_t r = rank_at(left); r != INT32_MAX) heap.emplace(r, left);
  }
  std::vector<std::string> merged;
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) merged.push_back(std::move(symbols[i]));
  return merged;
}

std::vector<int64_t> ClipTokenizer::bpe(const std::string& token) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    if (auto it = cache_->words.find(token); it != cache_->words.end()) return it->second;
  }
  std::vector<std::string> word;
  if (token == "<|startoftext|>" || token == "<|endoftext|>") {
    word = {token};
  } else {
    word = utf8_chars(token);
    word.back() += "</w>";
  }
  word = merge_pairs(std::move(word));
  std::vector<int64_t> ids;
  ids.reserve(word.size());
  for (const auto& symbol : word) {
    auto it = encoder_.find(symbol);
    if (it == encoder_.end()) fail("{}: BPE produced '{}', which is not in the vocabulary", path_.string(), symbol);
    ids.push_back(it->second);
  }
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
  cache_->words.emplace(token, ids);
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode_named(const std::string& text, const std::string& what) const {
  std::vector<int64_t> ids;
  const std::u32string cleaned = clip_text::clean(clip_text::decode_utf8(text, what));
  for (const auto& piece : clip_text::pretokenize(cleaned)) {
    std::string encoded;  // the piece's UTF-8 bytes, each as its printable stand-in
    for (unsigned char byte : clip_text::encode_utf8(piece)) encoded += byte_encoder_[byte];
    const auto word = bpe(encoded);
    ids.insert(ids.end(), word.begin(), word.end());
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const { return encode_named(text, "text"); }

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string symbols;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail_value("ClipTokenizer.decode: id {} is outside the vocabulary [0, {})", id, vocab_size());
    symbols += decoder_[id];
  }
  std::string bytes;
  for (char32_t c : clip_text::decode_utf8(symbols, "BPE symbols")) {
    std::string s;
    clip_text::append_utf8(s, c);
    auto it = byte_decoder_.find(s);
    bytes += it != byte_decoder_.end() ? static_cast<char>(it->second) : '?';
  }
  // bytearray.decode('utf-8', errors='replace')
  std::string text;
  size_t i = 0;
  while (i < bytes.size()) {
    utf8proc_int32_t c = 0;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(bytes.data() + i),
                                    static_cast<utf8proc_ssize_t>(bytes.size() - i), &c);
    if (n <= 0 || c < 0) {
      text += "\xEF\xBF\xBD";
      ++i;
    } else {
      text.append(bytes, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    }
  }
  std::string out;
  for (size_t at = 0;;) {
    const size_t next = text.find("</w>", at);
    out += text.substr(at, next == std::string::npos ? std::string::npos : next - at);
    if (next == std::string::npos) break;
    out += ' ';
    at = next + 4;
  }
  return out;
}

at::Tensor ClipTokenizer::operator()(const std::vector<std::string>& texts, int64_t context_length) const {
  const int64_t length = context_length > 0 ? context_length : context_length_;
  if (length < 2) fail_value("ClipTokenizer: context_length {} leaves no room for SOT and EOT", length);
  at::Tensor result = at::zeros({static_cast<int64_t>(texts.size()), length}, at::kLong);
  auto rows = result.accessor<int64_t, 2>();
  for (size_t n = 0; n < texts.size(); ++n) {
    std::vector<int64_t> tokens{sot_token_id_};
    const auto ids = encode_named(texts[n], fmt::format("texts[{}]", n));
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    tokens.push_back(eot_token_id_);
    if (static_cast<int64_t>(tokens.size()) > length) {
      tokens.resize(static_cast<size_t>(length));
      tokens.back() = eot_token_id_;
    }
    for (size_t t = 0; t < tokens.size(); ++t) rows[static_cast<int64_t>(n)][static_cast<int64_t>(t)] = tokens[t];
  }
  return result;
}

}  // namespace kclip
