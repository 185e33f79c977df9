#pragma once
// CSV/TSV records as RFC 4180 reads them (private header): quoted fields may hold separators, newlines and doubled
// quotes. Shared by the caption reader of the embedding cache and CsvDataset.
#include <kclip/error.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kclip::detail {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return text.str();
}

// Records of `text`; trailing empty lines are dropped. An unclosed quote is a kclip::Error naming `where`.
inline std::vector<std::vector<std::string>> parse_csv(const std::string& text, char separator, const std::string& where) {
  std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    std::string& field = rows.back().back();
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (c == '"') quoted = false;
      else field += c;
    } else if (c == '"' && field.empty()) {
      quoted = true;
    } else if (c == separator) {
      rows.back().emplace_back();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      rows.emplace_back(1);
    } else {
      field += c;
    }
  }
  if (quoted) fail("{}: a quoted field is not closed", where);
  while (!rows.empty() && rows.back().size() == 1 && rows.back()[0].empty()) rows.pop_back();
  return rows;
}

// The separator a CSV-like file uses unless told: ',' for .csv, tab otherwise (.tsv and open_clip's default).
inline char csv_separator_for(const std::filesystem::path& path) { return path.extension() == ".csv" ? ',' : '\t'; }

}  // namespace kclip::detail
