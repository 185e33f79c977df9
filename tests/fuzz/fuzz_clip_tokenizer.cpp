// CLIP's BPE tokenizer on arbitrary text with OpenAI's real vocabulary ($KCLIP_CLIP_VOCAB): encode, decode,
// and the padded [1, 77] batch the model takes.
#include "fuzz.h"

#include <kclip/clip_tokenizer.h>

#include <ATen/ATen.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kclip::ClipTokenizer tokenizer(kclip_fuzz::required_file("KCLIP_CLIP_VOCAB"));
  const std::string text(reinterpret_cast<const char*>(data), size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    const std::vector<int64_t> ids = tokenizer.encode(text);
    (void)tokenizer.decode(ids);
    (void)tokenizer({text});
  });
  return 0;
}
