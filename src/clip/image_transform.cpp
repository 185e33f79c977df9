// Image decoding (libjpeg-turbo, stb_image, libwebp) and OpenAI CLIP's preprocessing with Pillow's bicubic
// resampler.
#include <kclip/error.h>
#include <kclip/image_transform.h>
#include <kclip/runtime.h>

#include "core/parallel.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <cerrno>
#include <cmath>
#include <cctype>
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <cstring>
#include <fstream>
#include <iterator>

// JPEG: libjpeg-turbo, the decoder Pillow links, so decoded pixels equal Pillow's; fuzzed upstream (OSS-Fuzz).
#include <jpeglib.h>
#include <jerror.h>  // message codes (JWRN_JPEG_EOF)

// PNG, BMP, GIF: stb_image, compiled into this file only (static functions: no symbol clashes with other copies
// of stb), with those three decoders only: libjpeg-turbo decodes JPEG, and stb's others (TGA, PSD, PIC, PNM) are
// formats kclip does not document (a 123-byte header-only TGA decoded as 3855 x 3855 pixels: tests/fuzz).
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_FAILURE_USERMSG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#pragma GCC diagnostic pop

#include <webp/decode.h>

#include <random>

namespace kclip {
namespace {

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

// ---- Pillow's resampler (libImaging/Resample.c, 8 bits per channel) -----------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {  // Keys' cubic with a = -0.5, support 2
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For output pixels [begin, begin + first.size()): the first input pixel, how many are used, and their fixed-point
// weights. Each output pixel's coefficients depend on its position alone, so a window of the output is computed
// exactly as the whole.
struct Coefficients {
  int64_t begin = 0, taps = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;  // [outputs, taps]
};

Coefficients precompute_coefficients(int64_t in_size, int64_t out_size, int64_t begin, int64_t end) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 2.0 * filter_scale;
  Coefficients c;
  c.begin = begin;
  c.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<size_t>(end - begin));
  c.count.resize(static_cast<size_t>(end - begin));
  c.weights.assign(static_cast<size_t>((end - begin) * c.taps), 0);
  std::vector<double> k(static_cast<size_t>(c.taps));
  for (int64_t xx = begin; xx < end; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t xmax = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size) - xmin;
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      k[x] = bicubic((static_cast<double>(x + xmin) - center + 0.5) / filter_scale);
      total += k[x];
    }
    const int64_t o = xx - begin;
    for (int64_t x = 0; x < xmax; ++x) {
      const double w = total != 0.0 ? k[x] / total : k[x];
      c.weights[o * c.taps + x] = static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits)
                                                             : 0.5 + w * (1 << kPrecisionBits));
    }
    c.first[o] = xmin;
    c.count[o] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t value) {
  if (value >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (value <= 0) return 0;
  return static_cast<uint8_t>(value >> kPrecisionBits);
}

// The pass along x over rows [row_begin, row_end) of every plane: output columns as `c` covers them.
Planes resample_horizontal(const Planes& in, const Coefficients& c, int64_t row_begin, int64_t row_end) {
  Planes out{in.channels, row_end - row_begin, static_cast<int64_t>(c.first.size()), {}, in.resampling};
  out.data.resize(static_cast<size_t>(out.channels * out.height * out.width));
  for (int64_t ch = 0; ch < in.channels; ++ch) {
    for (int64_t y = 0; y < out.height; ++y) {
      const uint8_t* src = in.plane(ch) + (row_begin + y) * in.width;
      uint8_t* dst = out.plane(ch) + y * out.width;
      for (int64_t x = 0; x < out.width; ++x) {
        const int32_t* w = &c.weights[x * c.taps];
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t t = 0; t < c.count[x]; ++t) sum += int64_t{src[c.first[x] + t]} * w[t];
        dst[x] = clip8(sum);
      }
    }
  }
  return out;
}

// The pass along y: output rows as `c` covers them, from `in` whose first row is input row `row_offset`.
Planes resample_vertical(const Planes& in, const Coefficients& c, int64_t row_offset) {
  Planes out{in.channels, static_cast<int64_t>(c.first.size()), in.width, {}, in.resampling};
  out.data.resize(static_cast<size_t>(out.channels * out.height * out.width));
  for (int64_t ch = 0; ch < in.channels; ++ch) {
    const uint8_t* src = in.plane(ch);
    uint8_t* dst = out.plane(ch);
    for (int64_t y = 0; y < out.height; ++y) {
      const int32_t* w = &c.weights[y * c.taps];
      const int64_t first = c.first[y] - row_offset;
      for (int64_t x = 0; x < out.width; ++x) {
        int64_t sum = int64_t{1} << (kPrecisionBits - 1);
        for (int64_t t = 0; t < c.count[y]; ++t) sum += int64_t{src[(first + t) * in.width + x]} * w[t];
        dst[y * out.width + x] = clip8(sum);
      }
    }
  }
  return out;
}

// A window of an image resized to height × width: its rows [top, top + rows) and columns [left, left + cols).
struct Window {
  int64_t top, left, rows, cols;
};

Planes crop(const Planes& in, int64_t top, int64_t left, int64_t height, int64_t width) {
  Planes out{in.channels, height, width, std::vector<uint8_t>(static_cast<size_t>(in.channels * height * width)),
             in.resampling};
  for (int64_t c = 0; c < in.channels; ++c)
    for (int64_t y = 0; y < height; ++y)
      std::memcpy(out.plane(c) + y * width, in.plane(c) + (top + y) * in.width + left, static_cast<size_t>(width));
  return out;
}

// Pillow's two passes (horizontal, then vertical), computing only the output pixels of `window` and the
// intermediate rows they read: bit-identical to resizing the whole image and cropping (the centre crop keeps
// size × size of it; an image of extreme aspect ratio would otherwise resize to millions of pixels it drops).
Planes resize_bicubic_window(const Planes& in, int64_t height, int64_t width, const Window& window) {
  const int64_t bottom = window.top + window.rows, right = window.left + window.cols;
  Coefficients vertical;
  int64_t row_begin = window.top, row_end = bottom;  // the input rows the vertical pass reads
  if (height != in.height) {
    vertical = precompute_coefficients(in.height, height, window.top, bottom);
    row_begin = vertical.first.front();
    row_end = row_begin;
    for (size_t y = 0; y < vertical.first.size(); ++y)
      row_end = std::max(row_end, vertical.first[y] + vertical.count[y]);
  }
  Planes band = width != in.width
                    ? resample_horizontal(in, precompute_coefficients(in.width, width, window.left, right), row_begin, row_end)
                    : crop(in, row_begin, window.left, row_end - row_begin, window.cols);
  return height != in.height ? resample_vertical(band, vertical, row_begin) : band;
}

// Pillow's NEAREST (Geometry.c, ImagingScaleAffine): source positions accumulate the scale from half a step.
std::vector<int64_t> nearest_positions(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  std::vector<int64_t> positions(static_cast<size_t>(out_size));
  double at = scale * 0.5;
  for (auto& position : positions) {
    position = std::min<int64_t>(static_cast<int64_t>(at), in_size - 1);
    at += scale;
  }
  return positions;
}

Planes resize_nearest_window(const Planes& in, int64_t height, int64_t width, const Window& w) {
  const auto xs = nearest_positions(in.width, width), ys = nearest_positions(in.height, height);
  Planes out{in.channels, w.rows, w.cols, std::vector<uint8_t>(static_cast<size_t>(in.channels * w.rows * w.cols)),
             in.resampling};
  for (int64_t c = 0; c < in.channels; ++c)
    for (int64_t y = 0; y < w.rows; ++y)
      for (int64_t x = 0; x < w.cols; ++x)
        out.plane(c)[y * w.cols + x] = in.plane(c)[ys[w.top + y] * in.width + xs[w.left + x]];
  return out;
}

// Pillow's RGBA -> RGBa and back (Convert.c): (v·a + 128 + ((v·a + 128) >> 8)) >> 8, then 255·v / a clipped.
void premultiply(Planes& p) {
  const int64_t n = p.height * p.width;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t t = uint32_t{p.plane(c)[i]} * p.plane(3)[i] + 128;
      p.plane(c)[i] = static_cast<uint8_t>(((t >> 8) + t) >> 8);
    }
}

void unpremultiply(Planes& p) {
  const int64_t n = p.height * p.width;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t alpha = p.plane(3)[i];
    if (alpha == 0 || alpha == 255) continue;
    for (int64_t c = 0; c < 3; ++c) p.plane(c)[i] = static_cast<uint8_t>(std::min<uint32_t>(255 * p.plane(c)[i] / alpha, 255));
  }
}

// `window` of Image.resize((width, height), BICUBIC) as Pillow does it for the image's mode.
Planes resize_window(const Planes& in, int64_t height, int64_t width, const Window& window) {
  if (height == in.height && width == in.width) return crop(in, window.top, window.left, window.rows, window.cols);
  switch (in.resampling) {
    case Resampling::kNearest:
      return resize_nearest_window(in, height, width, window);
    case Resampling::kPremultiplied: {
      Planes p = in;
      premultiply(p);
      p = resize_bicubic_window(p, height, width, window);
      unpremultiply(p);
      return p;
    }
    default:
      return resize_bicubic_window(in, height, width, window);
  }
}

Planes resize(const Planes& in, int64_t height, int64_t width) {
  return resize_window(in, height, width, Window{0, 0, height, width});
}

// Pillow's convert("RGB") of a "CMYK" image (libImaging/Convert.c, cmyk2rgb): each channel (255 - k) scaled by
// (1 - ink), rounded as Pillow's MULDIV255.
Planes cmyk_to_rgb(const Planes& cmyk) {
  Planes rgb{3, cmyk.height, cmyk.width, std::vector<uint8_t>(static_cast<size_t>(3 * cmyk.height * cmyk.width))};
  const int64_t n = cmyk.height * cmyk.width;
  const uint8_t* k = cmyk.plane(3);
  for (int64_t c = 0; c < 3; ++c) {
    const uint8_t* ink = cmyk.plane(c);
    uint8_t* out = rgb.plane(c);
    for (int64_t i = 0; i < n; ++i) {
      const int paper = 255 - k[i], scaled = ink[i] * paper + 128;
      out[i] = static_cast<uint8_t>(paper - (((scaled >> 8) + scaled) >> 8));
    }
  }
  return rgb;
}

// ---- tensors <-> planes ------------------------------------------------------------------------------------

// uint8 [3|1, H, W] or [H, W] as planes; grey becomes RGB when `rgb` (as PIL's convert("RGB")).
Planes planes_of(const at::Tensor& image, const std::string& who, bool rgb = true) {
  if (!image.defined()) fail_value("{}: the image is missing", who);
  if (image.scalar_type() != at::kByte)
    fail_value("{}: image dtype is {}: expected uint8 [3, H, W] (decode files with read_image)", who,
               c10::toString(image.scalar_type()));
  at::Tensor chw = image.dim() == 2 ? image.unsqueeze(0) : image;
  if (chw.dim() != 3 || (chw.size(0) != 1 && chw.size(0) != 3 && chw.size(0) != 4))
    fail_value("{}: image shape [{}]: expected uint8 [3, H, W] (RGB), [4, H, W] (RGBA), [1, H, W] or [H, W]", who,
               fmt::join(image.sizes(), ", "));
  if (chw.size(1) == 0 || chw.size(2) == 0) fail_value("{}: the image is empty [{}]", who, fmt::join(image.sizes(), ", "));
  if (rgb && chw.size(0) == 1) chw = chw.expand({3, chw.size(1), chw.size(2)});
  chw = chw.to(at::kCPU).contiguous();
  Planes p{chw.size(0), chw.size(1), chw.size(2), {}};
  p.data.assign(chw.data_ptr<uint8_t>(), chw.data_ptr<uint8_t>() + chw.numel());
  if (rgb && p.channels == 4) p.resampling = Resampling::kPremultiplied;
  return p;
}

// Writes the centre size×size window of `image` (already resized), scaled to [0, 1] and normalised, to `out`.
void normalize_into(const Planes& image, int64_t top, int64_t left, const ImageTransform& t, float* out) {
  if (image.resampling == Resampling::kCmyk) return normalize_into(cmyk_to_rgb(image), top, left, t, out);
  const int64_t s = t.size;
  for (int64_t c = 0; c < 3; ++c) {
    const uint8_t* src = image.plane(c);
    for (int64_t y = 0; y < s; ++y)
      for (int64_t x = 0; x < s; ++x) {
        const float v = static_cast<float>(src[(top + y) * image.width + left + x]) / 255.0f;
        out[(c * s + y) * s + x] = (v - t.mean[c]) / t.std[c];
      }
  }
}

// OpenAI's _transform after decoding: Resize(size) of the shorter side, CenterCrop(size), ToTensor, Normalize.
void center_transform_into(const Planes& image, const ImageTransform& t, float* out) {
  const int64_t s = t.size;
  const int64_t short_side = std::min(image.height, image.width), long_side = std::max(image.height, image.width);
  const int64_t long_new = static_cast<int64_t>(static_cast<double>(s) * static_cast<double>(long_side) /
                                                static_cast<double>(short_side));  // torchvision truncates
  const int64_t h = image.height <= image.width ? s : long_new;
  const int64_t w = image.height <= image.width ? long_new : s;
  // torchvision's center_crop: int(round((H - size) / 2)) with Python's round-half-to-even
  const int64_t top = static_cast<int64_t>(std::nearbyint((h - s) / 2.0));
  const int64_t left = static_cast<int64_t>(std::nearbyint((w - s) / 2.0));
  normalize_into(resize_window(image, h, w, Window{top, left, s, s}), 0, 0, t, out);
}

// torchvision's RandomResizedCrop.get_params with a generator of our own: ten tries at a window of random area
// and aspect ratio, then the whole image clamped to the ratio range. Returns {top, left, height, width}.
std::array<int64_t, 4> random_crop_window(int64_t height, int64_t width, const ImageTransform& t, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&rng](double lo, double hi) { return lo + (hi - lo) * (static_cast<double>(rng() >> 11) * 0x1.0p-53); };
  auto below = [&rng](int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };  // [0, n)
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(t.crop_ratio[0]), log_hi = std::log(t.crop_ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * uniform(t.crop_scale[0], t.crop_scale[1]);
    const double aspect = std::exp(uniform(log_lo, log_hi));
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) return {below(height - h + 1), below(width - w + 1), h, w};
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < t.crop_ratio[0]) h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / t.crop_ratio[0]));
  else if (in_ratio > t.crop_ratio[1]) w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * t.crop_ratio[1]));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

// RandomResizedCrop (img.crop(window).resize((size, size), BICUBIC), as torchvision on PIL images), ToTensor,
// Normalize.
void random_crop_transform_into(const Planes& image, const ImageTransform& t, uint64_t seed, float* out) {
  const auto [top, left, h, w] = random_crop_window(image.height, image.width, t, seed);
  normalize_into(resize(crop(image, top, left, h, w), t.size, t.size), 0, 0, t, out);
}

void transform_into(const Planes& image, const ImageTransform& t, uint64_t seed, float* out) {
  if (t.random_resized_crop) random_crop_transform_into(image, t, seed, out);
  else center_transform_into(image, t, out);
}

void check_size(const ImageTransform& t) {
  if (t.size < 1) fail_value("ImageTransform: size {} must be positive", t.size);
  for (float sd : t.std)
    if (!(sd > 0)) fail_value("ImageTransform: std {} must be positive", sd);
  if (t.random_resized_crop && !(0 < t.crop_scale[0] && t.crop_scale[0] <= t.crop_scale[1] && t.crop_scale[1] <= 1 &&
                                 0 < t.crop_ratio[0] && t.crop_ratio[0] <= t.crop_ratio[1]))
    fail_value("ImageTransform: crop scale ({}, {}) must satisfy 0 < lo <= hi <= 1 and ratio ({}, {}) 0 < lo <= hi",
               t.crop_scale[0], t.crop_scale[1], t.crop_ratio[0], t.crop_ratio[1]);
}

// ---- JPEG (libjpeg-turbo) --------------------------------------------------------------------------------------

constexpr int kMaxJpegScans = 500;  // real progressive files have ~10; libjpeg-turbo's own fuzzers stop at 500

// libjpeg reports errors through a callback that must not return: it jumps back to decode_jpeg's setjmp.
struct JpegErrors {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 32];
};

[[noreturn]] void jpeg_fail_with(j_common_ptr cinfo, const char* message) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  std::snprintf(errors->message, sizeof errors->message, "%s", message);
  std::longjmp(errors->jump, 1);
}

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) {
  char reason[JMSG_LENGTH_MAX], message[JMSG_LENGTH_MAX + 32];
  (*cinfo->err->format_message)(cinfo, reason);
  std::snprintf(message, sizeof message, "cannot decode JPEG: %s", reason);
  jpeg_fail_with(cinfo, message);
}

// Warnings (corrupt entropy-coded data, extraneous bytes) are ignored, as Pillow ignores them; but data that ends
// before the image does is an error (libjpeg would pad the image with grey; Pillow refuses a truncated file).
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
    jpeg_fail_with(cinfo, "truncated JPEG (the data ends before the image does)");
}

// Each scan of a progressive JPEG passes over the whole image: thousands of tiny scans are a time bomb.
void jpeg_scan_limit(j_common_ptr cinfo) {
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number > kMaxJpegScans) {
    char message[64];
    std::snprintf(message, sizeof message, "corrupt JPEG: more than %d scans", kMaxJpegScans);
    jpeg_fail_with(cinfo, message);
  }
}

// One decompression: libjpeg's state and what is decoded so far. It lives in memory (libjpeg holds its address),
// so after a jump back from an error it is as the failing call left it, and its destructor cleans up.
struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  jpeg_progress_mgr progress;
  volatile bool created = false;
  Planes planes;
  std::vector<uint8_t> row;  // one decoded scanline, interleaved
  JpegDecoder() {
    cinfo.err = jpeg_std_error(&errors.mgr);
    errors.mgr.error_exit = jpeg_error_exit;
    errors.mgr.emit_message = jpeg_message;
    progress.progress_monitor = jpeg_scan_limit;
  }
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
};

// Decodes as Pillow's Image.open does: "L" (replicated to RGB, as convert("RGB")), "RGB", or "CMYK" with Adobe's
// inverted ink values ("CMYK;I"), converted to RGB after resizing unless `cmyk_to_rgb_now`.
Planes decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name, bool cmyk_to_rgb_now) {
  JpegDecoder d;  // the only object with a destructor here: declared before setjmp, so a jump skips none
  if (setjmp(d.errors.jump)) fail("{}: {}", name, d.errors.message);
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  d.cinfo.progress = &d.progress;
  jpeg_mem_src(&d.cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&d.cinfo, TRUE);
  const int components = d.cinfo.num_components;
  if (components != 1 && components != 3 && components != 4)
    fail("{}: a JPEG of {} components: expected 1 (grey), 3 (colour) or 4 (CMYK), as Pillow", name, components);
  if (int64_t{d.cinfo.image_width} * d.cinfo.image_height > kMaxPixels)
    fail("{}: {}x{} pixels exceeds the limit of {} (a decompression bomb?)", name, d.cinfo.image_width,
         d.cinfo.image_height, kMaxPixels);
  // Huffman coding spends at least one bit on every 8x8 block of a scan, so a file holds at most 512 pixels a byte;
  // libjpeg fills what a marker cut short with grey (as Pillow, which warns of nothing): a 178-byte file would
  // decode 145 million pixels. Arithmetic coding (rare) has no such bound.
  const double pixels = static_cast<double>(d.cinfo.image_width) * static_cast<double>(d.cinfo.image_height);
  if (!d.cinfo.arith_code && pixels > 512.0 * static_cast<double>(size))
    fail("{}: truncated JPEG: {}x{} pixels cannot be coded in {} bytes (at most 512 a byte)", name,
         d.cinfo.image_width, d.cinfo.image_height, size);
  d.cinfo.out_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_start_decompress(&d.cinfo);
  const int64_t height = d.cinfo.output_height, width = d.cinfo.output_width;
  const int64_t channels = components == 1 ? 3 : components;
  d.planes = Planes{channels, height, width, std::vector<uint8_t>(static_cast<size_t>(channels * height * width)),
                    components == 4 ? Resampling::kCmyk : Resampling::kBicubic};
  d.row.resize(static_cast<size_t>(width * components));
  while (d.cinfo.output_scanline < d.cinfo.output_height) {
    const int64_t y = d.cinfo.output_scanline;
    JSAMPROW rows[1] = {d.row.data()};
    jpeg_read_scanlines(&d.cinfo, rows, 1);
    const uint8_t* row = d.row.data();
    for (int64_t c = 0; c < channels; ++c) {  // interleaved -> planes
      uint8_t* out = d.planes.plane(c) + y * width;
      if (components == 1) std::memcpy(out, row, static_cast<size_t>(width));
      else if (components == 3) for (int64_t x = 0; x < width; ++x) out[x] = row[x * 3 + c];
      else for (int64_t x = 0; x < width; ++x) out[x] = static_cast<uint8_t>(255 - row[x * 4 + c]);  // "CMYK;I"
    }
  }
  jpeg_finish_decompress(&d.cinfo);
  if (components == 4 && cmyk_to_rgb_now) return cmyk_to_rgb(d.planes);
  return std::move(d.planes);
}

// An uncompressed BMP's pixel rows must all be in the file: stb_image fills missing rows with zeros, so a
// 314-byte file declaring 9 x 3801100 pixels decoded 34 million pixels (found by tests/fuzz/fuzz_image; Pillow
// refuses such a file as truncated). Returns the bytes the header implies when the file is shorter, else 0.
uint64_t bmp_truncated(const uint8_t* b, size_t size) {
  if (size < 2 || b[0] != 'B' || b[1] != 'M') return 0;
  if (size < 18) return 18;  // the file header and the info header's size
  auto u16 = [&](size_t at) { return uint64_t{b[at]} | uint64_t{b[at + 1]} << 8; };
  auto u32 = [&](size_t at) { return u16(at) | u16(at + 2) << 16; };
  const uint64_t offset = u32(10), header = u32(14);
  // The whole info header must be there (stb reads a cut one as zeros: 32 bytes decoded as 26 million pixels).
  const uint64_t header_end = 14 + (header == 12 ? 12 : std::max<uint64_t>(header, 20));
  if (size < header_end) return header_end;
  uint64_t width = 0, height = 0, bits = 0, compression = 0;
  if (header == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    width = u16(18), height = u16(20), bits = u16(24);
  } else {
    width = u32(18), bits = u16(28), compression = u32(30);
    const auto signed_height = static_cast<int32_t>(u32(22));  // negative: rows stored top-down
    height = signed_height < 0 ? uint64_t(-int64_t{signed_height}) : uint64_t(signed_height);
  }
  if (compression == 1 || compression == 2) return 0;  // RLE: stb refuses it; any other value it reads raw
  const uint64_t stride = (width * bits + 31) / 32 * 4;
  const double needed = static_cast<double>(offset) + static_cast<double>(stride) * static_cast<double>(height);
  return needed > static_cast<double>(size) ? static_cast<uint64_t>(std::min(needed, 1e19)) : 0;
}

// stb_image sizes some buffers from a file's headers before reading the data they describe; these checks hold
// those sizes against the file first (each found by tests/fuzz/fuzz_image), so a small file cannot make kclip
// allocate gigabytes. Each returns what is wrong, "" when nothing is.

uint32_t big_endian32(const uint8_t* b) { return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3]; }

// Every PNG chunk up to IEND must lie within the file: stb grows its buffer to an IDAT chunk's declared length
// before reading it (a 60-byte file declaring 1.5 GB). Pillow refuses such a file as truncated too. And the image
// data must be able to hold the pixels IHDR declares: stb allocates the inflated size up front (an 84-byte file
// declaring 9 x 16715532 pixels made it allocate 618 MB), while zlib expands its input at most 1032 times.
bool is_png(const uint8_t* b, size_t size) {
  static constexpr uint8_t kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return size >= 8 && std::equal(std::begin(kPng), std::end(kPng), b);
}

std::string png_problem(const uint8_t* b, size_t size) {
  if (!is_png(b, size)) return "";
  uint64_t width = 0, height = 0, bits_per_pixel = 0, image_data = 0;
  for (size_t at = 8; at + 8 <= size;) {
    const uint64_t length = big_endian32(b + at);
    std::string type(reinterpret_cast<const char*>(b + at + 4), 4);
    for (char& c : type) c = std::isalpha(static_cast<unsigned char>(c)) ? c : '?';
    if (at + 12 + length > size)
      return fmt::format("truncated PNG: chunk {} at byte {} declares {} bytes, {} remain", type, at, length,
                         size > at + 12 ? size - at - 12 : 0);
    if (type == "IHDR" && length >= 13) {
      static constexpr int kChannels[] = {1, 0, 3, 1, 2, 0, 4};  // by colour type: grey, -, RGB, palette, LA, -, RGBA
      width = big_endian32(b + at + 8), height = big_endian32(b + at + 12);
      const uint8_t colour_type = b[at + 17];
      bits_per_pixel = uint64_t{b[at + 16]} * (colour_type < 7 ? kChannels[colour_type] : 0);
    }
    if (type == "IDAT") image_data += length;
    if (type == "IEND") break;
    at += 12 + length;
  }
  const double needed = static_cast<double>(width) * static_cast<double>(height) * static_cast<double>(bits_per_pixel) / 8;
  if (needed > 1032.0 * static_cast<double>(image_data) + 1024)
    return fmt::format("truncated PNG: {}x{} pixels need {:.0f} bytes, more than its {} bytes of image data can "
                       "inflate to", width, height, needed, image_data);
  return "";  // what else is wrong (no IEND, bad CRC, ...) stb_image reports
}

// The PNG without its empty IDAT chunks (legal, and holding no data), or nothing when it has none: stb_image
// copies an empty chunk through a null pointer (undefined behaviour; tests/fuzz/fuzz_image). Call after
// png_problem (the chunks lie within the file).
std::vector<uint8_t> png_without_empty_idat(const uint8_t* b, size_t size) {
  std::vector<uint8_t> out;
  if (!is_png(b, size) || !png_problem(b, size).empty()) return out;
  bool dropped = false;
  size_t at = 8, kept = 0;  // b[kept, at) is copied when a chunk is dropped
  for (; at + 8 <= size;) {
    const uint64_t length = big_endian32(b + at);  // 64 bits: 12 + length must not wrap
    const bool empty_idat = length == 0 && std::memcmp(b + at + 4, "IDAT", 4) == 0;
    const bool end = std::memcmp(b + at + 4, "IEND", 4) == 0;
    if (empty_idat) {
      out.insert(out.end(), b + kept, b + at);
      kept = at + 12;
      dropped = true;
    }
    at += 12 + length;
    if (end) break;
  }
  if (!dropped) return {};
  out.insert(out.end(), b + kept, b + size);
  return out;
}

// A GIF's blocks up to the end of its first image (the one decoded, as Pillow) must lie within the file and be
// blocks GIF defines; a GIF without an image is refused (Pillow cannot identify it); and its canvas may not have
// more pixels than its bytes could fill (LZW emits at most 4096 pixels per code): stb allocates 9 bytes per canvas
// pixel before reading any block (a 232-byte file made it allocate 1.4 GB).
std::string gif_problem(const uint8_t* b, size_t size) {
  if (size < 6 || (std::memcmp(b, "GIF87a", 6) != 0 && std::memcmp(b, "GIF89a", 6) != 0)) return "";
  if (size < 13) return "truncated GIF: no logical screen descriptor";
  const uint64_t width = b[6] | b[7] << 8, height = b[8] | b[9] << 8;
  if (width * height > 4096 * static_cast<uint64_t>(size))
    return fmt::format("a {}x{} GIF canvas in {} bytes (more pixels than its data can fill: a decompression bomb?)",
                       width, height, size);
  size_t at = 13 + (b[10] & 0x80 ? 3 * (size_t{2} << (b[10] & 7)) : 0);  // after the global colour table
  auto skip_sub_blocks = [&]() {  // data sub-blocks: a length byte, that many bytes; a zero length ends them
    while (at < size && b[at] != 0) at += 1 + b[at];
    return at++ < size;
  };
  while (at < size) {
    const uint8_t introducer = b[at];
    if (introducer == 0x3B) return "a GIF without an image";  // the trailer
    if (introducer == 0x21) {  // an extension: its label, then sub-blocks
      at += 2;
      if (!skip_sub_blocks()) break;
    } else if (introducer == 0x2C) {  // an image: its descriptor, local colour table, LZW code size, sub-blocks
      if (at + 10 > size) break;
      const uint8_t flags = b[at + 9];
      at += 10 + (flags & 0x80 ? 3 * (size_t{2} << (flags & 7)) : 0) + 1;
      return skip_sub_blocks() ? "" : "truncated GIF: its first image ends before its data does";
    } else {
      return fmt::format("corrupt GIF: unknown block 0x{:02X} at byte {}", introducer, at);
    }
  }
  return "truncated GIF: the file ends before its first image";
}

// The mode Pillow opens a file as decides how it resizes: PNG colour type 3 (palette) or 1-bit grey opens as "P" /
// "1", colour types 4 and 6 as "LA" / "RGBA"; a GIF is "P" unless its global palette is the grey ramp ("L").
Resampling pillow_resampling(const uint8_t* b, size_t size) {
  if (size >= 26 && is_png(b, size)) {
    const uint8_t bit_depth = b[24], colour_type = b[25];
    if (colour_type == 3 || (colour_type == 0 && bit_depth == 1)) return Resampling::kNearest;
    if (colour_type == 4 || colour_type == 6) return Resampling::kPremultiplied;
    return Resampling::kBicubic;
  }
  if (size >= 13 && std::memcmp(b, "GIF8", 4) == 0) {
    if (!(b[10] & 0x80)) return Resampling::kNearest;  // no global palette: Pillow still opens "P"
    const size_t entries = size_t{2} << (b[10] & 7);
    if (size < 13 + 3 * entries) return Resampling::kNearest;
    for (size_t i = 0; i < entries; ++i) {
      const uint8_t* rgb = b + 13 + 3 * i;
      if (rgb[0] != i || rgb[1] != i || rgb[2] != i) return Resampling::kNearest;
    }
    return Resampling::kBicubic;
  }
  return Resampling::kBicubic;
}

bool is_webp(const uint8_t* b, size_t size) {
  return size >= 12 && std::memcmp(b, "RIFF", 4) == 0 && std::memcmp(b + 8, "WEBP", 4) == 0;
}

// Pillow opens a WebP as "RGBA" when it has alpha (resized premultiplied), else "RGB".
Planes decode_webp(const uint8_t* bytes, size_t size, const std::string& name, bool keep_alpha) {
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(bytes, size, &features) != VP8_STATUS_OK) fail("{}: cannot decode image: corrupt WebP header", name);
  if (features.has_animation) fail("{}: animated WebP is not supported: expected a still image", name);
  if (int64_t{features.width} * features.height > kMaxPixels)
    fail("{}: {}x{} pixels exceeds the limit of {} (a decompression bomb?)", name, features.width, features.height,
         kMaxPixels);
  const bool alpha = keep_alpha && features.has_alpha;
  const int channels = alpha ? 4 : 3;
  int width = 0, height = 0;
  uint8_t* pixels = alpha ? WebPDecodeRGBA(bytes, size, &width, &height) : WebPDecodeRGB(bytes, size, &width, &height);
  if (!pixels) fail("{}: cannot decode image: corrupt WebP data", name);
  Planes p{channels, height, width, {}, alpha ? Resampling::kPremultiplied : Resampling::kBicubic};
  const int64_t n = int64_t{height} * width;
  p.data.resize(static_cast<size_t>(channels * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < channels; ++c) p.data[c * n + i] = pixels[i * channels + c];
  WebPFree(pixels);
  return p;
}

// The image as Pillow opens it, for resizing in its mode (alpha, CMYK kept), or as RGB when `keep_mode` is false.
Planes decode_planes(const void* data, size_t size, const std::string& name, bool keep_mode = true) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (size == 0) fail("{}: empty file: expected a JPEG, PNG, BMP, GIF or WebP image", name);
  if (is_webp(bytes, size)) return decode_webp(bytes, size, name, keep_mode);
  if (size > static_cast<size_t>(INT32_MAX)) fail("{}: {} bytes: too large for the image decoder", name, size);
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)  // Pillow's test for a JPEG
    return decode_jpeg(bytes, size, name, /*cmyk_to_rgb_now=*/!keep_mode);
  if (const uint64_t needed = bmp_truncated(bytes, size))
    fail("{}: truncated BMP: its header implies {} bytes, the file has {}", name, needed, size);
  for (const std::string& problem : {png_problem(bytes, size), gif_problem(bytes, size)})
    if (!problem.empty()) fail("{}: {}", name, problem);
  const std::vector<uint8_t> png = png_without_empty_idat(bytes, size);
  if (!png.empty()) bytes = png.data(), size = png.size();
  int width = 0, height = 0, components = 0;
  if (!stbi_info_from_memory(bytes, static_cast<int>(size), &width, &height, &components))
    fail("{}: cannot decode image: {} (expected a JPEG, PNG, BMP, GIF or WebP image)", name, stbi_failure_reason());
  if (int64_t{width} * height > kMaxPixels)
    fail("{}: {}x{} pixels exceeds the limit of {} (a decompression bomb?)", name, width, height, kMaxPixels);
  Resampling resampling = pillow_resampling(bytes, size);
  if (!keep_mode && resampling == Resampling::kPremultiplied) resampling = Resampling::kBicubic;
  const int channels = resampling == Resampling::kPremultiplied ? 4 : 3;
  uint8_t* pixels = stbi_load_from_memory(bytes, static_cast<int>(size), &width, &height, &components, channels);
  if (!pixels) fail("{}: cannot decode image: {}", name, stbi_failure_reason());
  Planes p{channels, height, width, {}, resampling};
  const int64_t n = int64_t{height} * width;
  p.data.resize(static_cast<size_t>(channels * n));
  for (int64_t i = 0; i < n; ++i)  // interleaved -> planes
    for (int64_t c = 0; c < channels; ++c) p.data[c * n + i] = pixels[i * channels + c];
  stbi_image_free(pixels);
  return p;
}

std::vector<uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read error", path.string());
  return bytes;
}


at::Tensor to_tensor(const Planes& p) {
  at::Tensor t = at::empty({p.channels, p.height, p.width}, at::kByte);
  std::copy(p.data.begin(), p.data.end(), t.data_ptr<uint8_t>());
  return t;
}

}  // namespace

at::Tensor decode_image(const void* data, size_t size, const std::string& name) {
  return to_tensor(decode_planes(data, size, name, /*keep_mode=*/false));
}

at::Tensor read_image(const std::filesystem::path& path) {
  const auto bytes = read_file(path);
  return decode_image(bytes.data(), bytes.size(), path.string());
}

at::Tensor resize_bicubic(const at::Tensor& image, int64_t height, int64_t width) {
  if (height < 1 || width < 1) fail_value("resize_bicubic: output size {}x{} must be positive", height, width);
  const Planes p = planes_of(image, "resize_bicubic", /*rgb=*/false);
  return to_tensor(resize(p, height, width)).reshape(image.dim() == 2 ? at::IntArrayRef{height, width}
                                                                     : at::IntArrayRef{p.channels, height, width});
}

at::Tensor ImageTransform::operator()(const at::Tensor& image, uint64_t seed) const {
  check_size(*this);
  at::Tensor out = at::empty({3, size, size}, at::kFloat);
  transform_into(planes_of(image, "ImageTransform"), *this, seed, out.data_ptr<float>());
  return out;
}

at::Tensor ImageTransform::operator()(const void* data, size_t bytes, const std::string& name, uint64_t seed) const {
  check_size(*this);
  at::Tensor out = at::empty({3, size, size}, at::kFloat);
  transform_into(decode_planes(data, bytes, name), *this, seed, out.data_ptr<float>());
  return out;
}

at::Tensor ImageTransform::operator()(const std::vector<std::filesystem::path>& paths) const {
  check_size(*this);
  at::Tensor out = at::empty({static_cast<int64_t>(paths.size()), 3, size, size}, at::kFloat);
  float* base = out.data_ptr<float>();
  detail::parallel_for_each(static_cast<int64_t>(paths.size()), [&](int64_t i) {
    const auto bytes = read_file(paths[i]);
    transform_into(decode_planes(bytes.data(), bytes.size(), paths[i].string()), *this, 0, base + i * 3 * size * size);
  });
  return out;
}

at::Tensor ImageTransform::operator()(const std::vector<at::Tensor>& images) const {
  check_size(*this);
  std::vector<Planes> planes;
  planes.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) planes.push_back(planes_of(images[i], fmt::format("ImageTransform: images[{}]", i)));
  at::Tensor out = at::empty({static_cast<int64_t>(images.size()), 3, size, size}, at::kFloat);
  float* base = out.data_ptr<float>();
  detail::parallel_for_each(static_cast<int64_t>(planes.size()),
                    [&](int64_t i) { transform_into(planes[i], *this, 0, base + i * 3 * size * size); });
  return out;
}

}  // namespace kclip
