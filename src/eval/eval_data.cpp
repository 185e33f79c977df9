// Data helpers of the evaluations.
#include "eval/eval_data.h"

#include <kclip/error.h>

#include <fmt/format.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

namespace kclip::detail {

std::shared_ptr<const ClipTokenizer> default_tokenizer() {
  static std::mutex mutex;
  static std::shared_ptr<const ClipTokenizer> tokenizer;
  std::lock_guard<std::mutex> lock(mutex);
  if (!tokenizer) tokenizer = std::make_shared<const ClipTokenizer>();
  return tokenizer;
}

Sample ImageListDataset::get(int64_t index) const {
  Sample s;
  s.image_path = paths_.at(static_cast<size_t>(index));
  s.key = s.image_path.string();
  return s;
}

std::string ImageListDataset::describe() const { return fmt::format("{} images", paths_.size()); }

std::string SubsetDataset::describe() const {
  return fmt::format("{} of {} ({} samples)", name_, base_->describe(), indices_.size());
}

PairsTable read_pairs(const std::filesystem::path& spec, const CsvDatasetOptions& columns) {
  PairsTable table;
  const std::string ext = spec.extension().string();
  if (ext == ".csv" || ext == ".tsv" || std::filesystem::is_regular_file(spec)) {
    const CsvDataset pairs(spec, columns);
    std::vector<std::filesystem::path> images;
    std::unordered_map<std::string, int64_t> index;
    for (int64_t i = 0; i < pairs.size(); ++i) {
      const Sample s = pairs.get(i);
      auto [it, fresh] = index.emplace(s.image_path.string(), static_cast<int64_t>(images.size()));
      if (fresh) images.push_back(s.image_path);
      table.captions.push_back(s.caption);
      table.caption_image.push_back(it->second);
    }
    table.images = std::make_shared<ImageListDataset>(std::move(images));
    return table;
  }
  const DataSource source = open_data_source(spec.string(), DataSourceOptions().split("test"));
  if (!source.dataset) fail_value("{}: expected a pairs CSV/TSV, an image folder, fashion-mnist or mnist", spec.string());
  for (int64_t i = 0; i < source.dataset->size(); ++i) {
    table.captions.push_back(source.dataset->get(i).caption);  // one template: "a photo of a {class}."
    table.caption_image.push_back(i);
  }
  table.images = source.dataset;
  return table;
}

// For each row of `queries`, the indices of its k most similar rows of `keys` (best first), computed over blocks
// of keys so that no more than block × block similarities exist at once.
at::Tensor top_k_blocked(const at::Tensor& queries, const at::Tensor& keys, int64_t k, int64_t block) {
  std::vector<at::Tensor> rows;
  for (int64_t q = 0; q < queries.size(0); q += block) {
    const at::Tensor query = queries.narrow(0, q, std::min(block, queries.size(0) - q));
    at::Tensor best_values, best_indices;
    for (int64_t s = 0; s < keys.size(0); s += block) {
      const int64_t n = std::min(block, keys.size(0) - s);
      const at::Tensor similarity = query.matmul(keys.narrow(0, s, n).t());
      auto [values, indices] = similarity.topk(std::min(k, n), 1);
      indices = indices + s;
      if (best_values.defined()) {
        values = at::cat({best_values, values}, 1);
        indices = at::cat({best_indices, indices}, 1);
        auto [merged, order] = values.topk(std::min<int64_t>(k, values.size(1)), 1);
        values = merged;
        indices = indices.gather(1, order);
      }
      best_values = values;
      best_indices = indices;
    }
    rows.push_back(best_indices);
  }
  return at::cat(rows);
}

}  // namespace kclip::detail
