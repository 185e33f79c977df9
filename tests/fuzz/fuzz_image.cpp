// Image decoding (JPEG through libjpeg-turbo; PNG, GIF, BMP through stb_image; WebP through libwebp) and CLIP's
// preprocessing of whatever decodes, also with the training augmentation.
#include "fuzz.h"

#include <kclip/image_transform.h>

#include <ATen/ATen.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kclip::ImageTransform center = [] {
    kclip::ImageTransform t;
    t.size = 32;
    return t;
  }();
  static const kclip::ImageTransform augmented = [] {
    kclip::ImageTransform t = center;
    t.random_resized_crop = true;
    return t;
  }();
  KCLIP_FUZZ_EXPECT_CLEAR_ERRORS({
    at::Tensor image = kclip::decode_image(data, size, "fuzz input");
    (void)center(image);
    (void)augmented(image, size);
  });
  return 0;
}
