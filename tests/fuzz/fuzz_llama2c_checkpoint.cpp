// A llama2.c checkpoint (.bin: 7 int32 header fields, then float32 weights): the header's sizes are checked
// against the file before anything is allocated.
#include "fuzz.h"

#include <kclip/llama.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("model.bin", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS((void)kclip::LlamaImpl::load(path));
  return 0;
}
