// Concept agreement: does the student organise captions the way the teacher's concepts do?
#include <kclip/cluster_metrics.h>
#include <kclip/error.h>
#include <kclip/eval.h>

#include "eval/eval_data.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)

namespace kclip {
namespace {

// Mean fraction of the k nearest neighbours (cosine, self excluded) that two spaces share, row by row.
double knn_overlap(const at::Tensor& a, const at::Tensor& b, int64_t k) {
  auto neighbours = [k](const at::Tensor& x) {
    const at::Tensor unit = x / x.norm(2, {1}, true).clamp_min(1e-12);
    const at::Tensor top = detail::top_k_blocked(unit, unit, k + 1, 2048);
    // drop each row's own index (or the last one, when duplicates pushed it out)
    const at::Tensor self = at::arange(x.size(0), at::kLong).unsqueeze(1);
    at::Tensor keep = top.ne(self);
    keep.select(1, k).masked_fill_(keep.narrow(1, 0, k).all(1), false);
    return top.masked_select(keep).view({x.size(0), k});
  };
  const at::Tensor na = neighbours(a), nb = neighbours(b);
  return na.unsqueeze(2).eq(nb.unsqueeze(1)).any(2).to(at::kDouble).sum(1).div(static_cast<double>(k)).mean().item<double>();
}

}  // namespace

ConceptAgreement evaluate_concepts(CLIP& model, const KnowledgeClipLossImpl* loss, const ClipTokenizer& tokenizer,
                                   const std::filesystem::path& pairs_csv, const CsvDatasetOptions& columns,
                                   const EmbeddingCache& teacher, const KMeans& concepts, int64_t batch_size,
                                   int64_t workers) {
  if (!concepts.fitted()) fail_value("evaluate_concepts: the concepts' K-means is not fitted");
  if (concepts.centroids().size(1) != teacher.dim())
    fail("concepts have dimension {} but the teacher cache {} has {}", concepts.centroids().size(1),
         teacher.directory().string(), teacher.dim());
  const detail::PairsTable pairs = detail::read_pairs(pairs_csv, columns);
  std::vector<std::string> missing;
  for (const auto& c : pairs.captions)
    if (!teacher.contains(c) && missing.size() < 3) missing.push_back("\"" + c + "\"");
  if (!missing.empty())
    fail("{}: captions of {} are not in the teacher cache, e.g. {}", teacher.directory().string(), pairs_csv.string(),
         fmt::join(missing, ", "));

  ConceptAgreement r;
  r.pairs = static_cast<int64_t>(pairs.captions.size());
  r.concepts = concepts.centroids().size(0);
  const at::Tensor targets = teacher.get(pairs.captions);
  const at::Tensor teacher_labels = concepts.predict(targets).to(at::kCPU);
  const at::Tensor text = encode_texts(model, tokenizer, pairs.captions, batch_size, /*normalize=*/false);

  if (loss && loss->concept) {  // the heads' predicted concept of each pair
    const ImageFeatures images = encode_images(model, pairs.images,
                                               batch_size, workers, /*normalize=*/false);
    const at::Tensor image = images.features.index_select(0, at::tensor(pairs.caption_image, at::kLong));
    at::NoGradGuard no_grad;
    auto& head = const_cast<KnowledgeClipLossImpl*>(loss)->concept;
    const std::vector<at::Tensor> logits = head->logits(image.to(head->parameters()[0].device()),
                                                        text.to(head->parameters()[0].device()));
    at::Tensor probabilities = at::zeros_like(logits[0]);
    for (const auto& l : logits) probabilities += at::softmax(l, 1);
    const at::Tensor predicted = probabilities.argmax(1).to(at::kCPU);
    r.head = head->options.mode();
    r.nmi = nmi(teacher_labels, predicted);
    r.purity = purity(teacher_labels, predicted);
    r.ari = adjusted_rand_index(teacher_labels, predicted);
  }
  if (loss && loss->distillation) {  // how well W_e maps student text onto the (standardised) teacher targets
    at::NoGradGuard no_grad;
    auto& d = const_cast<KnowledgeClipLossImpl*>(loss)->distillation;
    const auto device = d->parameters()[0].device();
    const at::Tensor predicted = d->project(text.to(device)), target = d->standardize_targets(targets.to(device));
    r.distill_cosine = at::cosine_similarity(predicted, target, 1).mean().item<double>();
  }
  const at::Tensor unit = text / text.norm(2, {1}, true);
  KMeans student(KMeansOptions(r.concepts).seed(0).metric("cosine"));
  const at::Tensor student_labels = student.fit(unit).predict(unit).to(at::kCPU);
  r.kmeans_nmi = nmi(teacher_labels, student_labels);
  r.kmeans_purity = purity(teacher_labels, student_labels);
  r.kmeans_ari = adjusted_rand_index(teacher_labels, student_labels);
  r.knn_overlap = knn_overlap(text, targets, std::min<int64_t>(10, r.pairs - 1));
  return r;
}

}  // namespace kclip
