// safetensors: the header (8-byte length, JSON, offsets) and the data it describes, as SafetensorsFile and
// load_safetensors open a file: every tensor is materialised and summed, so a header that lies about the data
// is caught here, not later.
#include "fuzz.h"

#include <kclip/safetensors.h>

#include <ATen/ATen.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("input.safetensors", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::SafetensorsFile file(path);
    for (const auto& entry : file.entries()) {
      at::Tensor t = file.get(entry.name);
      if (t.numel() > 0 && at::isFloatingType(t.scalar_type())) (void)t.to(at::kDouble).sum().item<double>();
    }
    (void)kclip::load_safetensors_metadata(path);
  });
  return 0;
}
