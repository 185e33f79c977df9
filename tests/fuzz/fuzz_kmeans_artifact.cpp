// The K-means artifact (centroids + metadata in safetensors), loaded and used to label a few rows.
#include "fuzz.h"

#include <kclip/cluster.h>

#include <ATen/ATen.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = kclip_fuzz::write("concepts.safetensors", data, size);
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    kclip::KMeans km = kclip::KMeans::load(path);
    const at::Tensor x = at::ones({3, km.centroids().size(1)});
    (void)km.predict(x);
    (void)km.soft_labels(x, 0.5);
  });
  return 0;
}
