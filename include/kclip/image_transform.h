#pragma once
// Image decoding and OpenAI CLIP's preprocessing (clip.py's _transform, open_clip's image_transform for eval):
// decode JPEG (libjpeg-turbo, as Pillow), PNG / BMP / GIF (stb_image) and WebP (libwebp), resize the shorter side
// to `size` as Pillow's Image.resize(BICUBIC) does for the mode the file opens as (a port of Pillow's 8-bit
// resampler, fixed-point arithmetic included; nearest neighbour for palette and 1-bit images; alpha-premultiplied
// for LA / RGBA; CMYK JPEGs as inks, converted to RGB after resizing), center crop size×size, drop
// alpha, scale to [0, 1], normalise with CLIP's mean and std. Images are uint8 tensors [C, H, W] (torchvision's
// layout).
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kclip {

inline constexpr std::array<float, 3> kOpenAIDatasetMean{0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kOpenAIDatasetStd{0.26862954f, 0.26130258f, 0.27577711f};

// uint8 [3, H, W] RGB. Grey images are replicated to three channels and alpha is dropped (PIL's convert("RGB")).
// Unreadable, corrupt or truncated files, and images over 178956970 pixels (PIL's limit), are one kclip::Error
// naming the file.
at::Tensor read_image(const std::filesystem::path& path);
at::Tensor decode_image(const void* data, size_t size, const std::string& name);

// Pillow's Image.resize((width, height), Image.BICUBIC) of a uint8 image [C, H, W]: separable a = -0.5 cubic,
// support widened by the scale when shrinking (antialiasing), horizontal pass first, rounded to uint8 in between.
at::Tensor resize_bicubic(const at::Tensor& image, int64_t height, int64_t width);

// OpenAI CLIP's preprocessing for images of any size: float32 [3, size, size] per image.
struct ImageTransform {
  int64_t size = 224;
  std::array<float, 3> mean = kOpenAIDatasetMean;
  std::array<float, 3> std = kOpenAIDatasetStd;
  // Training augmentation, as open_clip's train transform: torchvision's RandomResizedCrop(size, scale, ratio,
  // bicubic) instead of resize + center crop. The crop is drawn from the `seed` given with each image, so a
  // sample gets the same crop whichever thread or process decodes it.
  bool random_resized_crop = false;
  std::array<double, 2> crop_scale{0.9, 1.0};              // open_clip's default AugmentationCfg.scale
  std::array<double, 2> crop_ratio{3.0 / 4.0, 4.0 / 3.0};  // torchvision's default

  // uint8 [3, H, W] (RGB), [4, H, W] (RGBA: premultiplied resize), [1, H, W] or [H, W] -> float [3, size, size]
  at::Tensor operator()(const at::Tensor& image, uint64_t seed = 0) const;
  // An encoded image (JPEG / PNG / BMP / GIF / WebP bytes; `name` for messages) -> float [3, size, size].
  at::Tensor operator()(const void* data, size_t bytes, const std::string& name, uint64_t seed = 0) const;
  // Batches, preprocessed in parallel: files or uint8 images (of any sizes) -> float [N, 3, size, size].
  at::Tensor operator()(const std::vector<std::filesystem::path>& paths) const;
  at::Tensor operator()(const std::vector<at::Tensor>& images) const;
};

}  // namespace kclip
