// The CLIP vocabulary files of a Hugging Face tokenizer directory: an input starting with '{' is vocab.json
// (beside a small valid merges.txt), anything else is merges.txt (beside a valid vocab.json with every byte
// symbol). OpenAI's single-file format needs all 48894 merges, too large to fuzz usefully; it shares the merge
// parsing with merges.txt.
#include "fuzz.h"

#include <kclip/clip_tokenizer.h>

#include <nlohmann/json.hpp>

namespace {

// GPT-2's byte-to-unicode table, as OpenAI's bytes_to_unicode().
std::vector<std::string> byte_symbols() {
  std::vector<std::string> out;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const int code = printable ? b : 256 + extra++;
    std::string utf8;
    if (code < 0x80) {
      utf8 += static_cast<char>(code);
    } else {
      utf8 += static_cast<char>(0xC0 | (code >> 6));
      utf8 += static_cast<char>(0x80 | (code & 0x3F));
    }
    out.push_back(utf8);
  }
  return out;
}

const char* kMerges = "#version: 0.2\nt h\nth e</w>\na </w>\np h\nph o\npho t\nphot o</w>\n";

std::string valid_vocab() {
  nlohmann::json vocab = nlohmann::json::object();
  int64_t id = 0;
  for (const auto& s : byte_symbols()) vocab[s] = id++;
  for (const auto& s : byte_symbols()) vocab[s + "</w>"] = id++;
  for (const char* merged : {"th", "the</w>", "a</w>", "ph", "pho", "phot", "photo</w>"}) vocab[merged] = id++;
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  return vocab.dump();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string vocab = valid_vocab();
  const std::filesystem::path dir = kclip_fuzz::scratch() / "clip-vocab";
  std::filesystem::create_directories(dir);
  const bool is_vocab = size > 0 && data[0] == '{';
  kclip_fuzz::write("clip-vocab/vocab.json", is_vocab ? data : reinterpret_cast<const uint8_t*>(vocab.data()),
                    is_vocab ? size : vocab.size());
  kclip_fuzz::write("clip-vocab/merges.txt", is_vocab ? reinterpret_cast<const uint8_t*>(kMerges) : data,
                    is_vocab ? std::strlen(kMerges) : size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::ClipTokenizer tokenizer(dir);
    (void)tokenizer.decode(tokenizer.encode("the photo of a cat, 42 times!"));
  });
  return 0;
}
