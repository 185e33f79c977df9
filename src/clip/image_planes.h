#pragma once
// Decoded images as the preprocessing works on them (private to src/clip): planes of uint8 in the mode Pillow
// opens the file as. image_decode.cpp decodes files into them; image_transform.cpp resizes and normalises them.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kclip::detail {

constexpr int64_t kMaxPixels = 178956970;  // Pillow's MAX_IMAGE_PIXELS * 2: beyond it Pillow refuses to open

// How Pillow resizes an image of the mode the file opens as: bicubic ("L", "RGB"), nearest neighbour for
// palette and bilevel images ("P", "1"), bicubic on alpha-premultiplied values for "LA" / "RGBA", bicubic on the
// ink values of a "CMYK" JPEG (converted to RGB after resizing, as OpenAI's transform converts after Resize).
enum class Resampling { kBicubic, kNearest, kPremultiplied, kCmyk };

// A planar uint8 image [channels, height, width]: RGB, RGBA when `resampling` is kPremultiplied, CMYK when it is
// kCmyk.
struct Planes {
  int64_t channels = 0, height = 0, width = 0;
  std::vector<uint8_t> data;
  Resampling resampling = Resampling::kBicubic;
  uint8_t* plane(int64_t c) { return data.data() + c * height * width; }
  const uint8_t* plane(int64_t c) const { return data.data() + c * height * width; }
};

// Pillow's convert("RGB") of a "CMYK" image.
Planes cmyk_to_rgb(const Planes& cmyk);

// The image as Pillow opens it, for resizing in its mode (alpha, CMYK kept), or as RGB when `keep_mode` is false.
// Errors name `name`.
Planes decode_planes(const void* data, size_t size, const std::string& name, bool keep_mode = true);

// A whole file's bytes; errors name the path.
std::vector<uint8_t> read_file(const std::filesystem::path& path);

}  // namespace kclip::detail
