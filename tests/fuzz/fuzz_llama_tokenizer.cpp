// The Llama tokenizer on arbitrary text through kclip's own encoder of llama2.c's tokenizer.bin
// ($KCLIP_LLAMA_TOKENIZER_BIN): encode with BOS/EOS, decode, pieces. Meta's tokenizer.model goes through
// sentencepiece, which kclip loads with RTLD_DEEPBIND (its embedded protobuf clashes with LibTorch's), and
// AddressSanitizer cannot load such a library; sentencepiece is fuzzed upstream (OSS-Fuzz).
#include "fuzz.h"

#include <kclip/llama_tokenizer.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kclip::LlamaTokenizer tokenizer(kclip_fuzz::required_file("KCLIP_LLAMA_TOKENIZER_BIN"));
  const std::string text(reinterpret_cast<const char*>(data), size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    (void)tokenizer.decode(tokenizer.encode(text, true, true));
    (void)tokenizer.encode_as_pieces(text);
  });
  return 0;
}
