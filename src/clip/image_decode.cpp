// Image decoding as Pillow opens files: JPEG with libjpeg-turbo (the library Pillow links), PNG / BMP / GIF with
// stb_image behind checks that hold its header sizes against the file, WebP with libwebp.
#include "clip/image_planes.h"

#include <kclip/error.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
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

namespace kclip::detail {

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

namespace {

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
// copies an empty chunk through a null pointer (undefined behaviour; tests/fuzz/fuzz_image). Reads only whole
// chunk headers within the file, so it needs no earlier check (decode_planes runs png_problem first anyway).
std::vector<uint8_t> png_without_empty_idat(const uint8_t* b, size_t size) {
  std::vector<uint8_t> out;
  if (!is_png(b, size)) return out;
  bool dropped = false;
  size_t at = 8, kept = 0;  // b[kept, at) is copied when a chunk is dropped
  for (; at + 8 <= size;) {
    const uint64_t length = big_endian32(b + at);  // 64 bits: 12 + length must not wrap
    const bool empty_idat = length == 0 && at + 12 <= size && std::memcmp(b + at + 4, "IDAT", 4) == 0;
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

}  // namespace

Planes decode_planes(const void* data, size_t size, const std::string& name, bool keep_mode) {
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

}  // namespace kclip::detail
