// WebDataset: tar shards as img2dataset writes them, streamed with libarchive; webdataset's brace expansion.
#include <kclip/data.h>
#include <kclip/error.h>

#include "data/tar_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <algorithm>
#include <cctype>
#include <vector>

namespace kclip {

// ---- brace expansion ------------------------------------------------------------------------------------------

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

void expand_into(const std::string& pattern, std::vector<std::string>& out) {
  const size_t open = pattern.find('{');
  if (open == std::string::npos) {
    out.push_back(pattern);
    return;
  }
  const size_t close = pattern.find('}', open);
  if (close == std::string::npos) fail_value("shard pattern '{}': '{{' without a closing '}}'", pattern);
  const std::string prefix = pattern.substr(0, open), body = pattern.substr(open + 1, close - open - 1);
  const std::string rest = pattern.substr(close + 1);
  std::vector<std::string> items;
  if (const size_t dots = body.find(".."); dots != std::string::npos) {
    const std::string lo = body.substr(0, dots), hi = body.substr(dots + 2);
    if (!all_digits(lo) || !all_digits(hi) || lo.size() > 18 || hi.size() > 18)
      fail_value("shard pattern '{}': range {{{}}} must be two non-negative integers", pattern, body);
    const int64_t first = std::stoll(lo), last = std::stoll(hi);
    if (last < first) fail_value("shard pattern '{}': range {{{}}} runs backwards", pattern, body);
    if (last - first >= 10'000'000) fail_value("shard pattern '{}': range {{{}}} is too long", pattern, body);
    const size_t width = lo.size() > 1 && lo[0] == '0' ? std::max(lo.size(), hi.size()) : 0;
    for (int64_t i = first; i <= last; ++i) items.push_back(fmt::format("{:0{}d}", i, width));
  } else if (body.find(',') != std::string::npos) {
    size_t start = 0;
    for (size_t comma; (comma = body.find(',', start)) != std::string::npos; start = comma + 1)
      items.push_back(body.substr(start, comma - start));
    items.push_back(body.substr(start));
  } else {
    items.push_back("{" + body + "}");  // not a brace group: literal
  }
  for (const auto& item : items) {
    std::vector<std::string> tails;
    expand_into(rest, tails);
    for (const auto& tail : tails) out.push_back(prefix + item + tail);
  }
}

}  // namespace

std::vector<std::string> expand_braces(const std::string& pattern) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t sep = pattern.find("::", start);
    const std::string part = pattern.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    if (!part.empty()) expand_into(part, out);
    if (sep == std::string::npos) break;
    start = sep + 2;
  }
  return out;
}

// ---- one shard --------------------------------------------------------------------------------------------------

namespace detail {

namespace {

constexpr int64_t kMaxMemberBytes = int64_t{1} << 30;

// webdataset's base_plus_ext: key = path up to the first '.' of the file name, extension = the rest (lower case).
bool split_key(const std::string& name, std::string& key, std::string& ext) {
  const size_t slash = name.rfind('/');
  const size_t dot = name.find('.', slash == std::string::npos ? 0 : slash + 1);
  if (dot == std::string::npos || dot == (slash == std::string::npos ? 0 : slash + 1)) return false;
  key = name.substr(0, dot);
  ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return true;
}

std::string trim(const std::string& s) {
  const size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace

TarSampleReader::TarSampleReader(std::string shard, const WebDatasetOptions& options, bool read_images)
    : shard_(std::move(shard)), options_(options), read_images_(read_images) {
  archive_ = archive_read_new();
  if (!archive_) fail("{}: cannot allocate a tar reader", shard_);
  archive_read_support_filter_all(archive_);
  archive_read_support_format_tar(archive_);
  if (archive_read_open_filename(archive_, shard_.c_str(), 1 << 20) != ARCHIVE_OK) {
    const std::string message = archive_error_string(archive_) ? archive_error_string(archive_) : "cannot open";
    archive_read_free(archive_);
    archive_ = nullptr;
    fail("{}: cannot open tar shard: {}", shard_, message);
  }
}

TarSampleReader::~TarSampleReader() {
  if (archive_) archive_read_free(archive_);
}

bool TarSampleReader::read_header() {
  while (!done_) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(archive_, &entry);
    if (r == ARCHIVE_EOF) {
      done_ = true;
      break;
    }
    if (r < ARCHIVE_WARN)
      fail("{}: damaged tar archive after member '{}': {}", shard_, pending_name_,
           archive_error_string(archive_) ? archive_error_string(archive_) : "unreadable header");
    if (archive_entry_filetype(entry) != AE_IFREG) continue;
    pending_name_ = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
    pending_size_ = archive_entry_size(entry);
    return true;
  }
  return false;
}

std::string TarSampleReader::read_data(const std::string& name) {
  if (pending_size_ < 0 || pending_size_ > kMaxMemberBytes)
    fail("{}: member '{}' declares {} bytes (at most {} accepted)", shard_, name, pending_size_, kMaxMemberBytes);
  // Memory follows the bytes that actually arrive, not the size the header declares (a damaged header could
  // claim half a gigabyte for a member of a few bytes: found by tests/fuzz/fuzz_tar_shard).
  const auto declared = static_cast<size_t>(pending_size_);
  std::string data;
  data.reserve(std::min<size_t>(declared, size_t{1} << 20));
  std::vector<char> buffer(std::min<size_t>(declared, size_t{1} << 16));
  while (data.size() < declared) {
    const la_ssize_t n = archive_read_data(archive_, buffer.data(), std::min(buffer.size(), declared - data.size()));
    if (n < 0)
      fail("{}: member '{}' cannot be read: {}", shard_, name,
           archive_error_string(archive_) ? archive_error_string(archive_) : "read error");
    if (n == 0) fail("{}: member '{}' is truncated ({} of {} bytes)", shard_, name, data.size(), declared);
    data.append(buffer.data(), static_cast<size_t>(n));
  }
  return data;
}

void TarSampleReader::skip_data(const std::string& name) {
  if (archive_read_data_skip(archive_) < ARCHIVE_WARN)
    fail("{}: member '{}' cannot be read: {}", shard_, name,
         archive_error_string(archive_) ? archive_error_string(archive_) : "truncated archive");
}

std::optional<Sample> TarSampleReader::next() {
  Sample sample;
  std::string current;
  bool have = false, has_image = false, has_caption = false;
  while (has_pending_ || read_header()) {
    std::string key, ext;
    if (!split_key(pending_name_, key, ext)) {  // no extension: not part of any sample
      has_pending_ = false;
      continue;
    }
    if (have && key != current) {
      if (has_image && has_caption) {
        has_pending_ = true;  // the member read ahead starts the next sample
        return sample;
      }
      ++incomplete_;
      sample = Sample{};
      have = has_image = has_caption = false;
    }
    has_pending_ = false;
    if (!have) {
      have = true;
      current = key;
      sample.key = shard_ + ":" + key;
    }
    const auto& images = options_.image_extensions();
    if (!has_image && std::find(images.begin(), images.end(), ext) != images.end()) {
      has_image = true;
      if (read_images_) sample.image_bytes = read_data(pending_name_);
      else skip_data(pending_name_);
    } else if (ext == options_.caption_extension()) {
      has_caption = true;
      sample.caption = trim(read_data(pending_name_));
    } else {
      skip_data(pending_name_);
    }
  }
  if (have && has_image && has_caption) return sample;
  if (have) ++incomplete_;
  return std::nullopt;
}

}  // namespace detail

// ---- the data set ---------------------------------------------------------------------------------------------

WebDataset::WebDataset(const std::string& pattern, WebDatasetOptions options) : options_(std::move(options)) {
  for (auto& ext : options_.image_extensions())
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (options_.image_extensions().empty()) fail_value("WebDataset: no image extensions");
  if (options_.shuffle_buffer() < 0) fail_value("WebDataset: shuffle_buffer {} must be >= 0", options_.shuffle_buffer());
  shards_ = expand_braces(pattern);
  if (shards_.empty()) fail_value("WebDataset: pattern '{}' names no shard", pattern);
  for (const auto& shard : shards_) {  // a damaged shard counts the samples before the damage
    int64_t n = 0;
    try {
      detail::TarSampleReader reader(shard, options_, /*read_images=*/false);
      while (reader.next()) ++n;
      incomplete_ += reader.incomplete();
    } catch (const Error& e) {
      damaged_.push_back(e.what());
    }
    sizes_.push_back(n);
  }
  if (size() == 0) fail("{}: no complete samples (each needs an image {} and a .{} caption)", pattern,
                        fmt::join(options_.image_extensions(), "/"), options_.caption_extension());
}

int64_t WebDataset::size() const {
  int64_t total = 0;
  for (int64_t n : sizes_) total += n;
  return total;
}

std::string WebDataset::describe() const {
  return fmt::format("webdataset {} shard{} ({} samples{}{})", shards_.size(), shards_.size() == 1 ? "" : "s", size(),
                     incomplete_ ? fmt::format(", {} incomplete keys passed over", incomplete_) : "",
                     damaged_.empty() ? "" : fmt::format(", {} damaged shard(s): {}", damaged_.size(), damaged_[0]));
}

}  // namespace kclip
