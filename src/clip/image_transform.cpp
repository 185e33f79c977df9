// OpenAI CLIP's preprocessing with Pillow's bicubic resampler, on images decoded by image_decode.cpp.
#include <kclip/error.h>
#include <kclip/image_transform.h>
#include <kclip/runtime.h>

#include "clip/image_planes.h"
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
#include <cmath>
#include <cstring>

#include <random>

namespace kclip {
namespace {

using detail::cmyk_to_rgb;
using detail::decode_planes;
using detail::Planes;
using detail::read_file;
using detail::Resampling;

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
