// llama2.c's tokenizer.bin format (int32 max length; per piece: float32 score, int32 length, bytes), parsed by
// kclip's own reader.
#include "fuzz.h"

#include <kclip/llama_tokenizer.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("tokenizer.bin", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::LlamaTokenizer tokenizer(path);
    (void)tokenizer.decode(tokenizer.encode("Once upon a time, 3 cats.", true, false));
  });
  return 0;
}
