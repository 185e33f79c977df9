// Features for evaluation: every image of a data set and every text, L2-normalised, without gradients.
#include <kclip/error.h>
#include <kclip/eval.h>

#include "eval/eval_data.h"

#include <ATen/ATen.h>

namespace kclip {

ImageFeatures encode_images(CLIP& model, std::shared_ptr<const Dataset> data, int64_t batch_size, int64_t workers,
                            bool normalize) {
  if (!data) fail_value("encode_images: no data set");
  const bool training = model->is_training();
  model->eval();
  ImageTransform transform;
  transform.size = model->config().image_size;
  // The loader tokenizes captions too: a context of 2 keeps that cost negligible.
  DataLoader loader(data,
                    DataLoaderOptions()
                        .batch_size(batch_size)
                        .workers(workers)
                        .shuffle(false)
                        .drop_last(false)
                        .bad_samples("error")
                        .transform(transform)
                        .context_length(2),
                    detail::default_tokenizer());
  std::vector<at::Tensor> features, labels;
  {
    at::NoGradGuard no_grad;
    while (auto batch = loader.next()) {
      const at::Tensor f = model->encode_image(batch->images).to(at::kCPU, at::kFloat);
      features.push_back(normalize ? f / f.norm(2, {1}, true) : f);
      labels.push_back(batch->labels);
    }
  }
  model->train(training);
  return {at::cat(features), at::cat(labels)};
}

at::Tensor encode_texts(CLIP& model, const ClipTokenizer& tokenizer, const std::vector<std::string>& texts,
                        int64_t batch_size, bool normalize) {
  if (texts.empty()) fail_value("encode_texts: no texts");
  if (batch_size < 1) fail_value("encode_texts: batch_size {} must be positive", batch_size);
  const bool training = model->is_training();
  model->eval();
  std::vector<at::Tensor> out;
  {
    at::NoGradGuard no_grad;
    for (size_t start = 0; start < texts.size(); start += static_cast<size_t>(batch_size)) {
      const std::vector<std::string> chunk(texts.begin() + static_cast<int64_t>(start),
                                           texts.begin() + static_cast<int64_t>(std::min(texts.size(), start + batch_size)));
      const at::Tensor f = model->encode_text(tokenizer(chunk, model->config().context_length)).to(at::kCPU, at::kFloat);
      out.push_back(normalize ? f / f.norm(2, {1}, true) : f);
    }
  }
  model->train(training);
  return at::cat(out);
}

}  // namespace kclip
