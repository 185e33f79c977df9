// open_data_source: a training-data string (`kclip train --train-data`) to a data set.
#include <kclip/data.h>
#include <kclip/error.h>

#include <fmt/format.h>

namespace kclip {
namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string detect_type(const std::string& spec) {
  if (spec == "fashion-mnist" || spec == "mnist") return "idx";
  if (spec.find('{') != std::string::npos || spec.find("::") != std::string::npos || ends_with(spec, ".tar") ||
      ends_with(spec, ".tar.gz") || ends_with(spec, ".tgz"))
    return "webdataset";
  if (ends_with(spec, ".csv") || ends_with(spec, ".tsv")) return "csv";
  std::error_code ec;
  if (fs::is_directory(spec, ec)) return "imagefolder";
  if (fs::is_regular_file(spec, ec)) return "csv";
  fail_value(
      "training data '{}' not found: expected a .csv/.tsv file, tar shards (e.g. shards/{{00000..00009}}.tar), an "
      "image folder, or fashion-mnist / mnist",
      spec);
}

}  // namespace

std::string DataSource::describe() const {
  if (dataset) return dataset->describe();
  if (webdataset) return webdataset->describe();
  return "no data";
}

DataSource open_data_source(const std::string& spec, DataSourceOptions options) {
  const std::string type = options.type() == "auto" ? detect_type(spec) : options.type();
  DataSource source;
  if (type == "csv") {
    source.dataset = std::make_shared<CsvDataset>(spec, options.csv());
  } else if (type == "webdataset") {
    source.webdataset = std::make_shared<WebDataset>(spec);
  } else if (type == "imagefolder") {
    source.dataset = std::make_shared<ImageFolderDataset>(spec, options.templates());
  } else if (type == "idx") {
    source.dataset = IdxDataset::named(spec, options.split(), options.templates());
  } else {
    fail_value("dataset type '{}': expected auto, csv, webdataset, imagefolder or idx", type);
  }
  return source;
}

}  // namespace kclip
