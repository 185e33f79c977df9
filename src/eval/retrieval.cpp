// Image–text retrieval recall@k, blockwise with running top-k (clip_benchmark's definitions).
#include <kclip/error.h>
#include <kclip/eval.h>

#include "eval/eval_data.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace kclip {
namespace {

// Fraction of queries whose first k retrieved items include a correct one (correct: [Q, K] booleans).
double recall_at(const at::Tensor& correct, int64_t k) {
  return correct.narrow(1, 0, std::min(k, correct.size(1))).any(1).to(at::kDouble).mean().item<double>();
}

}  // namespace

RetrievalResult retrieval_recall(const at::Tensor& image_features, const at::Tensor& text_features,
                                 const at::Tensor& text_image, const std::vector<int64_t>& ks, int64_t block) {
  const char* who = "retrieval_recall";
  if (!image_features.defined() || !text_features.defined() || image_features.dim() != 2 || text_features.dim() != 2 ||
      image_features.size(1) != text_features.size(1))
    fail_value("{}: expected image [I, D] and text [T, D] features", who);
  if (!text_image.defined() || text_image.dim() != 1 || text_image.size(0) != text_features.size(0))
    fail_value("{}: text_image must give the image of each of the {} texts", who, text_features.size(0));
  if (ks.empty() || *std::min_element(ks.begin(), ks.end()) < 1 || block < 1) fail_value("{}: ks and block must be >= 1", who);
  RetrievalResult r;
  r.images = image_features.size(0);
  r.texts = text_features.size(0);
  if (r.images == 0 || r.texts == 0) fail_value("{}: no images or no texts", who);
  const at::Tensor owner = text_image.to(at::kCPU, at::kLong);
  if (owner.min().item<int64_t>() < 0 || owner.max().item<int64_t>() >= r.images)
    fail_value("{}: text_image holds an index outside [0, {})", who, r.images);
  const int64_t k = *std::max_element(ks.begin(), ks.end());
  const at::Tensor images = image_features.to(at::kCPU, at::kFloat), texts = text_features.to(at::kCPU, at::kFloat);
  // image → text: a retrieved text is correct when it belongs to the query image
  const at::Tensor texts_of_images = detail::top_k_blocked(images, texts, k, block);
  const at::Tensor image_hits = owner.index({texts_of_images}).eq(at::arange(r.images, at::kLong).unsqueeze(1));
  // text → image: the retrieved image must be the text's own
  const at::Tensor images_of_texts = detail::top_k_blocked(texts, images, k, block);
  const at::Tensor text_hits = images_of_texts.eq(owner.unsqueeze(1));
  for (int64_t kk : ks) {
    r.image_to_text[kk] = recall_at(image_hits, kk);
    r.text_to_image[kk] = recall_at(text_hits, kk);
  }
  return r;
}

RetrievalResult evaluate_retrieval(CLIP& model, const ClipTokenizer& tokenizer, const std::filesystem::path& csv,
                                   const CsvDatasetOptions& columns, int64_t batch_size, int64_t workers) {
  const std::string ext = csv.extension().string();
  if (ext != ".csv" && ext != ".tsv" && !std::filesystem::is_regular_file(csv))
    fail_value("retrieval {}: expected a pairs CSV/TSV (class-labelled data has identical captions for many images, "
               "which retrieval cannot tell apart: use zero-shot classification there)", csv.string());
  const detail::PairsTable pairs = detail::read_pairs(csv, columns);
  const ImageFeatures images = encode_images(model, pairs.images, batch_size, workers);
  const at::Tensor texts = encode_texts(model, tokenizer, pairs.captions, batch_size);
  return retrieval_recall(images.features, texts, at::tensor(pairs.caption_image, at::kLong));
}

}  // namespace kclip
