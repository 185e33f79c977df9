// A sharded checkpoint's model.safetensors.index.json (weight_map, metadata) beside two real shards.
#include "fuzz.h"

#include <kclip/safetensors.h>

#include <ATen/ATen.h>

namespace {

void write_shards() {
  static bool done = false;
  if (done) return;
  kclip::TensorDict a, b;
  a.insert("a.weight", at::arange(6, at::kFloat).view({2, 3}));
  b.insert("b.bias", at::ones({4}, at::kDouble));
  kclip::save_safetensors(kclip_fuzz::scratch() / "model-00001-of-00002.safetensors", a);
  kclip::save_safetensors(kclip_fuzz::scratch() / "model-00002-of-00002.safetensors", b);
  done = true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_shards();
  const auto path = kclip_fuzz::write("model.safetensors.index.json", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    (void)kclip::load_safetensors(path);
    (void)kclip::load_safetensors_metadata(path);
  });
  return 0;
}
