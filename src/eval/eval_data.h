#pragma once
// Data helpers of the evaluations (private header): the default tokenizer, a list of image files as a data set,
// and a subset of a data set.
#include <kclip/data.h>

#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace kclip::detail {

// The CLIP tokenizer from kclip's default vocabulary, made once.
std::shared_ptr<const ClipTokenizer> default_tokenizer();

// Image files (captions unused): what retrieval encodes, one entry per unique image.
class ImageListDataset : public Dataset {
 public:
  explicit ImageListDataset(std::vector<std::filesystem::path> paths) : paths_(std::move(paths)) {}
  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  Sample get(int64_t index) const override;
  std::string describe() const override;

 private:
  std::vector<std::filesystem::path> paths_;
};

// The samples `indices` of `base`, in that order (a train or test split).
class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<int64_t> indices, std::string name)
      : base_(std::move(base)), indices_(std::move(indices)), name_(std::move(name)) {}
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  Sample get(int64_t index) const override { return base_->get(indices_.at(static_cast<size_t>(index))); }
  std::string describe() const override;
  std::vector<std::string> classes() const override { return base_->classes(); }

 private:
  std::shared_ptr<const Dataset> base_;
  std::vector<int64_t> indices_;
  std::string name_;
};

// Image–caption pairs to evaluate on: the unique images as a data set (`images`, one sample per image), every
// caption, and each caption's image index. From a pairs CSV (images in first-appearance order), or from any other
// source open_data_source takes (an image folder, "fashion-mnist", ...: its test split, each sample with its
// caption, class name × the first template).
struct PairsTable {
  std::shared_ptr<const Dataset> images;
  std::vector<std::string> captions;
  std::vector<int64_t> caption_image;
};
PairsTable read_pairs(const std::filesystem::path& spec, const CsvDatasetOptions& columns);

// For each row of `queries` [Q, D], the indices [Q, min(k, K)] of its most similar rows of `keys` [K, D] (dot
// product, best first), over blocks of `block` keys and queries with a running top-k: never the Q × K matrix.
at::Tensor top_k_blocked(const at::Tensor& queries, const at::Tensor& keys, int64_t k, int64_t block);

}  // namespace kclip::detail
