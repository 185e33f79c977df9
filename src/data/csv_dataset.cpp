// CsvDataset: open_clip's CSV/TSV of image paths and captions.
#include <kclip/data.h>
#include <kclip/error.h>

#include "data/csv.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

#include <algorithm>

namespace kclip {
namespace fs = std::filesystem;

char csv_separator(const std::string& text) {
  if (text.empty()) return 0;
  if (text == "\\t") return '\t';
  if (text.size() != 1) fail_value("CSV separator '{}': expected one character or \\t", text);
  return text[0];
}

std::vector<std::string> Dataset::captions() const {
  std::vector<std::string> all;
  all.reserve(static_cast<size_t>(size()));
  for (int64_t i = 0; i < size(); ++i) all.push_back(get(i).caption);
  return all;
}

CsvDataset::CsvDataset(const fs::path& path, CsvDatasetOptions options) : path_(path) {
  const std::string where = path.string();
  if (options.bad_rows() != "skip" && options.bad_rows() != "error")
    fail_value("CsvDataset: bad_rows '{}': expected skip or error", options.bad_rows());
  const char separator = options.separator() ? options.separator() : detail::csv_separator_for(path);
  const auto records = detail::parse_csv(detail::read_text_file(path), separator, where);
  if (records.empty()) fail("{}: empty file: expected a header row naming the columns", where);
  const auto& header = records[0];
  auto column = [&](const std::string& key, const char* flag) {
    const auto it = std::find(header.begin(), header.end(), key);
    if (it == header.end())
      fail("{}: no column '{}' ({}) in the header [{}] (separator '{}')", where, key, flag, fmt::join(header, ", "),
           separator == '\t' ? "\\t" : std::string(1, separator));
    return static_cast<size_t>(it - header.begin());
  };
  const size_t image_column = column(options.img_key(), "--csv-img-key");
  const size_t caption_column = column(options.caption_key(), "--csv-caption-key");
  const size_t needed = std::max(image_column, caption_column) + 1;
  const fs::path base = path.parent_path();
  for (size_t r = 1; r < records.size(); ++r) {
    const auto& fields = records[r];
    std::string problem;
    if (fields.size() < needed) problem = fmt::format("has {} fields, expected at least {}", fields.size(), needed);
    else if (fields[image_column].empty()) problem = fmt::format("has an empty '{}' field", options.img_key());
    if (!problem.empty()) {
      if (options.bad_rows() == "error") fail("{}: record {} {}", where, r + 1, problem);
      ++skipped_rows_;
      continue;
    }
    const fs::path image(fields[image_column]);
    rows_.push_back({image.is_absolute() ? image : base / image, fields[caption_column]});
  }
  if (rows_.empty())
    fail("{}: no usable records ({} after the header, {} malformed)", where, records.size() - 1, skipped_rows_);
}

Sample CsvDataset::get(int64_t index) const {
  const Row& row = rows_.at(static_cast<size_t>(index));
  Sample s;
  s.key = row.image.string();
  s.caption = row.caption;
  s.image_path = row.image;
  return s;
}

std::string CsvDataset::describe() const {
  return fmt::format("CSV {} ({} pairs{})", path_.string(), rows_.size(),
                     skipped_rows_ ? fmt::format(", {} malformed records skipped", skipped_rows_) : "");
}

std::vector<std::string> CsvDataset::captions() const {
  std::vector<std::string> all;
  all.reserve(rows_.size());
  for (const auto& row : rows_) all.push_back(row.caption);
  return all;
}

}  // namespace kclip
