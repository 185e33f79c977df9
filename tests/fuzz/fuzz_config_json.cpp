// Model configs as JSON: open_clip-style CLIP configs, Hugging Face CLIPConfig and LlamaConfig.
#include "fuzz.h"

#include <kclip/clip.h>
#include <kclip/llama.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("config.json", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS((void)kclip::CLIPConfig::from_json(path));
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS((void)kclip::CLIPConfig::from_hf_json(path));
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS((void)kclip::LlamaConfig::from_json(path));
  return 0;
}
