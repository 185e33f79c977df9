#pragma once
// Teachers: whatever turns captions into the embeddings Knowledge-CLIP distils. `LlamaTeacher` pools a Llama's
// hidden states; Python subclasses of kclip.Teacher plug in any other model.
#include <kclip/llama.h>
#include <kclip/llama_tokenizer.h>

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <memory>
#include <string>
#include <vector>

namespace kclip {

class Teacher {
 public:
  virtual ~Teacher() = default;
  // float32 [texts, dim] on the CPU, one row per text, in order.
  virtual at::Tensor embed(const std::vector<std::string>& texts) = 0;
  virtual int64_t dim() const = 0;
  // Provenance: which checkpoint and settings produced the embeddings; caches refuse mixing two ids.
  virtual std::string id() const = 0;
};

struct LlamaTeacherOptions {
  TORCH_ARG(std::string, pooling) = "mean";  // "mean" (over real tokens), "last" (last real token) or "first"
  TORCH_ARG(int64_t, layer) = -1;            // -1: after the final RMSNorm; l: output of block l
  // Tokens per caption, BOS included; longer captions are truncated. 0: the model's context length (and a token
  // budget of at least that).
  TORCH_ARG(int64_t, max_length) = 0;
  TORCH_ARG(bool, bos) = true;
  TORCH_ARG(bool, normalize) = false;        // L2-normalise each embedding
  TORCH_ARG(int64_t, token_budget) = 8192;   // padded tokens per forward batch
};

class LlamaTeacher : public Teacher {
 public:
  LlamaTeacher(Llama model, std::shared_ptr<LlamaTokenizer> tokenizer, LlamaTeacherOptions options,
               std::string checkpoint);
  // A Hugging Face directory or llama2.c .bin; the tokenizer defaults to tokenizer.model beside the weights.
  static std::shared_ptr<LlamaTeacher> load(const std::filesystem::path& path, const std::filesystem::path& tokenizer = {},
                                            LlamaTeacherOptions options = {});

  at::Tensor embed(const std::vector<std::string>& texts) override;
  // Pooled embeddings of already tokenized captions: sorted by length, batched by the token budget.
  at::Tensor embed_ids(const std::vector<std::vector<int64_t>>& ids);
  int64_t dim() const override { return model_->config().hidden_size; }
  std::string id() const override;

  Llama& model() { return model_; }
  const LlamaTeacherOptions& options() const { return options_; }

 private:
  Llama model_;
  std::shared_ptr<LlamaTokenizer> tokenizer_;
  LlamaTeacherOptions options_;
  std::string checkpoint_;  // checkpoint fingerprint, part of id()
};

// A short fingerprint of a checkpoint: FNV-1a over its config, file names and sizes and the first MiB of each
// weight file (hashing every byte of a 13 GB model would take minutes).
std::string checkpoint_fingerprint(const std::filesystem::path& path);

}  // namespace kclip
