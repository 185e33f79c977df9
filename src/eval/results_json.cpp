// Evaluation results as JSON documents: one schema for `kclip eval`, Python and the training metrics.
#include <kclip/eval.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>

namespace kclip {
namespace {

using json = nlohmann::ordered_json;

json number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }  // JSON has no NaN

json recalls(const std::map<int64_t, double>& r) {
  json j = json::object();
  for (const auto& [k, v] : r) j[fmt::format("R@{}", k)] = v;
  return j;
}

}  // namespace

std::string to_json(const ClassificationResult& r, const std::vector<std::string>& class_names) {
  json per_class = json::object();
  for (size_t c = 0; c < r.per_class.size(); ++c)
    per_class[c < class_names.size() ? class_names[c] : std::to_string(c)] = number(r.per_class[c]);
  return json{{"top1", r.top1}, {"top5", r.top5}, {"samples", r.samples}, {"classes", r.classes}, {"per_class", per_class}}
      .dump();
}

std::string to_json(const RetrievalResult& r) {
  return json{{"image_to_text", recalls(r.image_to_text)}, {"text_to_image", recalls(r.text_to_image)},
              {"images", r.images}, {"texts", r.texts}}
      .dump();
}

std::string to_json(const LinearProbeResult& r) {
  json validation = json::object();
  for (const auto& [c, a] : r.validation) validation[fmt::format("{:g}", c)] = a;
  return json{{"top1", r.top1}, {"c", r.c}, {"validation", validation}, {"train", r.train}, {"test", r.test},
              {"classes", r.classes}}
      .dump();
}

std::string to_json(const TextProbeResult& r) {
  json examples = json::array();
  for (const auto& [caption, reconstruction] : r.examples) examples.push_back({caption, reconstruction});
  return json{{"exact_match", r.exact_match}, {"token_accuracy", r.token_accuracy},
              {"train_exact_match", r.train_exact_match}, {"train", r.train}, {"test", r.test},
              {"vocabulary", r.vocabulary}, {"examples", examples}}
      .dump();
}

std::string to_json(const ConceptAgreement& r) {
  json j = {{"nmi", r.head.empty() ? json(nullptr) : json(r.nmi)},
            {"purity", r.head.empty() ? json(nullptr) : json(r.purity)},
            {"ari", r.head.empty() ? json(nullptr) : json(r.ari)},
            {"head", r.head.empty() ? json(nullptr) : json(r.head)},
            {"kmeans", {{"nmi", r.kmeans_nmi}, {"purity", r.kmeans_purity}, {"ari", r.kmeans_ari}}},
            {"distill_cosine", number(r.distill_cosine)},
            {"knn_overlap", r.knn_overlap},
            {"pairs", r.pairs},
            {"concepts", r.concepts}};
  return j.dump();
}

}  // namespace kclip
