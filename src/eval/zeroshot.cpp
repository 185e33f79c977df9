// Zero-shot classification with OpenAI's classifier construction (CLIP's notebooks, open_clip's zero_shot.py).
#include <kclip/error.h>
#include <kclip/eval.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <regex>

namespace kclip {

std::string class_prompt_name(const std::string& folder_name) {
  static const std::regex numbered(R"(^\d+\.(.+)$)");
  std::smatch m;
  std::string name = std::regex_match(folder_name, m, numbered) ? m[1].str() : folder_name;
  for (char& c : name)
    if (c == '_') c = ' ';
  return name;
}

at::Tensor zeroshot_classifier(CLIP& model, const ClipTokenizer& tokenizer,
                               const std::vector<std::vector<std::string>>& texts_per_class) {
  if (texts_per_class.empty()) fail_value("zeroshot_classifier: no classes");
  std::vector<std::string> all;
  for (size_t c = 0; c < texts_per_class.size(); ++c) {
    if (texts_per_class[c].empty()) fail_value("zeroshot_classifier: class {} has no texts", c);
    all.insert(all.end(), texts_per_class[c].begin(), texts_per_class[c].end());
  }
  const at::Tensor features = encode_texts(model, tokenizer, all);  // normalised rows
  std::vector<at::Tensor> columns;
  int64_t start = 0;
  for (const auto& texts : texts_per_class) {
    const at::Tensor mean = features.narrow(0, start, static_cast<int64_t>(texts.size())).mean(0);
    columns.push_back(mean / mean.norm());
    start += static_cast<int64_t>(texts.size());
  }
  return at::stack(columns, 1);
}

at::Tensor zeroshot_classifier(CLIP& model, const ClipTokenizer& tokenizer, const std::vector<std::string>& class_names,
                               const std::vector<std::string>& templates) {
  if (templates.empty()) fail_value("zeroshot_classifier: no templates");
  std::vector<std::vector<std::string>> texts;
  for (const auto& name : class_names) {
    texts.emplace_back();
    for (const auto& t : templates) {
      const size_t at = t.find("{}");
      if (at == std::string::npos) fail_value("zeroshot_classifier: template \"{}\" has no {{}}", t);
      texts.back().push_back(t.substr(0, at) + name + t.substr(at + 2));
    }
  }
  return zeroshot_classifier(model, tokenizer, texts);
}

ClassificationResult classification_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  if (!logits.defined() || logits.dim() != 2 || !labels.defined() || labels.dim() != 1 || labels.size(0) != logits.size(0))
    fail_value("classification_accuracy: expected logits [N, C] and labels [N]");
  ClassificationResult r;
  r.samples = logits.size(0);
  r.classes = logits.size(1);
  if (r.samples == 0) fail_value("classification_accuracy: no samples");
  const at::Tensor y = labels.to(at::kCPU, at::kLong);
  if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= r.classes)
    fail_value("classification_accuracy: labels must lie in [0, {})", r.classes);
  const at::Tensor top = std::get<1>(logits.to(at::kCPU).topk(std::min<int64_t>(5, r.classes), 1));
  const at::Tensor hits = top.eq(y.unsqueeze(1));
  const at::Tensor first = hits.select(1, 0).to(at::kDouble);
  r.top1 = first.mean().item<double>();
  r.top5 = hits.any(1).to(at::kDouble).mean().item<double>();
  for (int64_t c = 0; c < r.classes; ++c) {
    const at::Tensor mine = y.eq(c);
    const int64_t n = mine.sum().item<int64_t>();
    r.per_class.push_back(n ? first.masked_select(mine).mean().item<double>() : std::nan(""));
  }
  return r;
}

ClassificationResult evaluate_zeroshot(CLIP& model, const ClipTokenizer& tokenizer, std::shared_ptr<const Dataset> data,
                                       const std::vector<std::string>& templates, int64_t batch_size, int64_t workers) {
  if (!data) fail_value("evaluate_zeroshot: no data set");
  const std::vector<std::string> classes = data->classes();
  if (classes.empty()) fail_value("evaluate_zeroshot: {} has no classes (use an image folder or an IDX data set)", data->describe());
  std::vector<std::string> names;
  for (const auto& c : classes) names.push_back(class_prompt_name(c));
  const at::Tensor classifier = zeroshot_classifier(model, tokenizer, names, templates);
  const ImageFeatures images = encode_images(model, data, batch_size, workers);
  return classification_accuracy(100.0 * images.features.matmul(classifier), images.labels);
}

}  // namespace kclip
