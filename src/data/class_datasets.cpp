// Class-labelled sources with captions made from class names and prompt templates: ImageFolderDataset and
// IdxDataset (MNIST / Fashion-MNIST).
#include <kclip/data.h>
#include <kclip/error.h>

#include "data/csv.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>

namespace kclip {
namespace fs = std::filesystem;

namespace {
#include "data/templates.inc"

template <size_t N>
std::vector<std::string> to_vector(const char* const (&items)[N]) {
  return std::vector<std::string>(std::begin(items), std::end(items));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void check_template(const std::string& t, const std::string& where) {
  if (t.find("{}") == std::string::npos) fail_value("{}: template \"{}\" has no {{}} for the class name", where, t);
}

}  // namespace

std::vector<std::string> caption_templates(const std::string& name) {
  if (name == "openai-cifar10") return to_vector(kOpenAICifar10Templates);
  if (name == "openai-imagenet") return to_vector(kOpenAIImagenetTemplates);
  if (name == "simple") return {"a photo of a {}."};
  if (!fs::is_regular_file(name))
    fail_value("templates '{}': expected openai-cifar10, openai-imagenet, simple or a file with one template per line",
               name);
  std::vector<std::string> templates;
  std::istringstream lines(detail::read_text_file(name));
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    check_template(line, name);
    templates.push_back(line);
  }
  if (templates.empty()) fail("{}: no templates (expected one per line, with {{}} for the class name)", name);
  return templates;
}

// ---- captions from class names -------------------------------------------------------------------------------

namespace {

std::string fill(const std::string& templ, std::string name) {
  std::replace(name.begin(), name.end(), '_', ' ');
  const size_t at = templ.find("{}");
  return templ.substr(0, at) + name + templ.substr(at + 2);
}

// A fixed, well-spread template choice per image (SplitMix64 of the index).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::string ClassCaptions::caption(int64_t label, int64_t index) const {
  const size_t t = templates.size() == 1 ? 0 : mix(static_cast<uint64_t>(index)) % templates.size();
  return fill(templates[t], class_names.at(static_cast<size_t>(label)));
}

std::vector<std::string> ClassCaptions::all() const {
  std::vector<std::string> captions;
  for (const auto& name : class_names)
    for (const auto& t : templates) captions.push_back(fill(t, name));
  return captions;
}

// ---- ImageFolder ----------------------------------------------------------------------------------------------

namespace {

bool has_image_extension(const fs::path& p) {
  static const std::vector<std::string> kExtensions = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"};
  return std::find(kExtensions.begin(), kExtensions.end(), lower(p.extension().string())) != kExtensions.end();
}

void check_templates(const std::vector<std::string>& templates, const std::string& who) {
  if (templates.empty()) fail_value("{}: no caption templates", who);
  for (const auto& t : templates) check_template(t, who);
}

}  // namespace

ImageFolderDataset::ImageFolderDataset(const fs::path& root, std::vector<std::string> templates) : root_(root) {
  check_templates(templates, "ImageFolderDataset");
  captions_.templates = std::move(templates);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) fail("{}: not a directory: expected one sub-folder of images per class", root.string());
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) captions_.class_names.push_back(entry.path().filename().string());
  std::sort(captions_.class_names.begin(), captions_.class_names.end());
  if (captions_.class_names.empty()) fail("{}: no class sub-folders: expected root/<class>/<image>", root.string());
  for (size_t c = 0; c < captions_.class_names.size(); ++c) {
    std::vector<fs::path> images;
    for (const auto& entry : fs::recursive_directory_iterator(root / captions_.class_names[c]))
      if (entry.is_regular_file() && has_image_extension(entry.path())) images.push_back(entry.path());
    if (images.empty())
      fail("{}: class folder '{}' holds no images (.jpg .jpeg .png .bmp .gif .webp)", root.string(),
           captions_.class_names[c]);
    std::sort(images.begin(), images.end());
    for (auto& image : images) {
      files_.push_back(std::move(image));
      labels_.push_back(static_cast<int64_t>(c));
    }
  }
}

Sample ImageFolderDataset::get(int64_t index) const {
  Sample s;
  s.image_path = files_.at(static_cast<size_t>(index));
  s.key = s.image_path.string();
  s.label = labels_[static_cast<size_t>(index)];
  s.caption = captions_.caption(s.label, index);
  return s;
}

std::string ImageFolderDataset::describe() const {
  return fmt::format("image folder {} ({} images, {} classes)", root_.string(), files_.size(), captions_.class_names.size());
}

// ---- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------------------------

namespace {

// The whole file, gunzipped when it is gzip (zlib reads plain files through too).
std::string read_maybe_gzip(const fs::path& path) {
  gzFile in = gzopen(path.c_str(), "rb");
  if (!in) fail("{}: cannot open", path.string());
  std::string data;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(in, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
  int code = Z_OK;
  const char* message = n < 0 ? gzerror(in, &code) : nullptr;
  gzclose(in);
  if (n < 0) fail("{}: cannot decompress: {}", path.string(), message ? message : "read error");
  return data;
}

uint32_t big_endian(const std::string& data, size_t at) {
  const auto* b = reinterpret_cast<const unsigned char*>(data.data()) + at;
  return uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | uint32_t{b[3]};
}

// An IDX file of unsigned bytes with `dims` dimensions -> uint8 tensor of that shape.
at::Tensor read_idx(const fs::path& path, int dims) {
  const std::string data = read_maybe_gzip(path);
  const std::string where = path.string();
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (data.size() < header) fail("{}: {} bytes: too short for an IDX header", where, data.size());
  const uint32_t magic = big_endian(data, 0);
  if (magic != (0x0800u | static_cast<uint32_t>(dims)))
    fail("{}: IDX magic 0x{:08x}: expected 0x{:08x} (unsigned bytes, {} dimensions)", where, magic,
         0x0800u | static_cast<uint32_t>(dims), dims);
  std::vector<int64_t> shape;
  uint64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    shape.push_back(big_endian(data, 4 + 4 * static_cast<size_t>(d)));
    count *= static_cast<uint64_t>(shape.back());
  }
  if (data.size() - header != count)
    fail("{}: {} data bytes for shape [{}]: expected {}", where, data.size() - header, fmt::join(shape, ", "), count);
  at::Tensor t = at::empty(shape, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), data.data() + header, count);
  return t;
}

const std::vector<std::string>& idx_class_names(const std::string& name) {
  static const std::vector<std::string> kFashion = {"t-shirt/top", "trouser", "pullover", "dress", "coat",
                                                     "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
  static const std::vector<std::string> kDigits = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  return name == "fashion-mnist" ? kFashion : kDigits;
}

fs::path first_existing(const fs::path& dir, const std::string& stem) {
  for (const char* suffix : {".gz", ""})
    if (fs::is_regular_file(dir / (stem + suffix))) return dir / (stem + suffix);
  fail("{}: no {}[.gz] (IDX files as MNIST ships them)", dir.string(), stem);
}

}  // namespace

IdxDataset::IdxDataset(const fs::path& images, const fs::path& labels, std::vector<std::string> class_names,
                       std::vector<std::string> templates)
    : images_path_(images) {
  check_templates(templates, "IdxDataset");
  if (class_names.empty()) fail_value("IdxDataset: no class names");
  captions_ = {std::move(class_names), std::move(templates)};
  images_ = read_idx(images, 3);
  labels_ = read_idx(labels, 1).to(at::kLong);
  if (labels_.size(0) != images_.size(0))
    fail("{} has {} images but {} has {} labels", images.string(), images_.size(0), labels.string(), labels_.size(0));
  if (images_.size(0) == 0) fail("{}: no images", images.string());
  const int64_t max_label = labels_.max().item<int64_t>();
  if (max_label >= static_cast<int64_t>(captions_.class_names.size()))
    fail("{}: label {} but only {} class names", labels.string(), max_label, captions_.class_names.size());
}

std::shared_ptr<IdxDataset> IdxDataset::named(const std::string& name, const std::string& split,
                                              std::vector<std::string> templates, const fs::path& directory) {
  if (name != "fashion-mnist" && name != "mnist") fail_value("IdxDataset: '{}': expected fashion-mnist or mnist", name);
  if (split != "train" && split != "test") fail_value("IdxDataset: split '{}': expected train or test", split);
  const fs::path dir = directory.empty() ? fs::path("/usr/share/datasets") / name : directory;
  if (!fs::is_directory(dir))
    fail("{}: not found (Debian's dataset-{} package installs it there)", dir.string(), name);
  const std::string prefix = split == "train" ? "train" : "t10k";
  return std::make_shared<IdxDataset>(first_existing(dir, prefix + "-images-idx3-ubyte"),
                                      first_existing(dir, prefix + "-labels-idx1-ubyte"), idx_class_names(name),
                                      std::move(templates));
}

Sample IdxDataset::get(int64_t index) const {
  if (index < 0 || index >= size()) fail_value("IdxDataset: index {} out of range [0, {})", index, size());
  Sample s;
  s.key = fmt::format("{}[{}]", images_path_.filename().string(), index);
  s.label = labels_.data_ptr<int64_t>()[index];
  s.caption = captions_.caption(s.label, index);
  s.image = images_[index];  // uint8 [H, W], a view
  return s;
}

std::string IdxDataset::describe() const {
  return fmt::format("IDX {} ({} images {}x{}, {} classes)", images_path_.string(), images_.size(0), images_.size(1),
                     images_.size(2), captions_.class_names.size());
}

}  // namespace kclip
