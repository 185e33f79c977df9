// LlamaTeacher: captions -> tokens -> length-sorted, token-budgeted batches -> hidden states -> pooled rows.
#include <kclip/error.h>
#include <kclip/teacher.h>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <numeric>

namespace kclip {

namespace {

uint64_t fnv1a(uint64_t hash, const void* data, std::size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

uint64_t hash_file(uint64_t hash, const std::filesystem::path& file, std::size_t limit) {
  std::ifstream in(file, std::ios::binary);
  std::vector<char> buffer(limit);
  in.read(buffer.data(), static_cast<std::streamsize>(limit));
  const std::string name = file.filename().string();
  const uint64_t size = std::filesystem::file_size(file);
  hash = fnv1a(hash, name.data(), name.size());
  hash = fnv1a(hash, &size, sizeof(size));
  return fnv1a(hash, buffer.data(), static_cast<std::size_t>(in.gcount()));
}

}  // namespace

std::string checkpoint_fingerprint(const std::filesystem::path& path) {
  uint64_t hash = 14695981039346656037ull;
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(path)) {
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      const auto ext = e.path().extension();
      if (e.is_regular_file() && (ext == ".safetensors" || ext == ".json" || ext == ".bin")) files.push_back(e.path());
    }
  } else {
    files.push_back(path);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) hash = hash_file(hash, f, std::size_t{1} << 20);
  return fmt::format("{}:{:016x}", path.filename().string(), hash);
}

LlamaTeacher::LlamaTeacher(Llama model, std::shared_ptr<LlamaTokenizer> tokenizer, LlamaTeacherOptions options,
                           std::string checkpoint)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)),
      checkpoint_(std::move(checkpoint)) {
  if (options_.max_length() == 0) {  // the model's own context; the token budget grows to hold one such caption
    options_.max_length(model_->config().max_position_embeddings);
    options_.token_budget(std::max(options_.token_budget(), options_.max_length()));
  }
  const auto& o = options_;
  if (o.pooling() != "mean" && o.pooling() != "last" && o.pooling() != "first")
    fail_value("LlamaTeacher: pooling='{}': expected 'mean', 'last' or 'first'", o.pooling());
  if (o.layer() < -1 || o.layer() >= model_->config().num_hidden_layers)
    fail_value("LlamaTeacher: layer={} not in [-1, {})", o.layer(), model_->config().num_hidden_layers);
  if (o.max_length() < 1 || o.max_length() > model_->config().max_position_embeddings)
    fail_value("LlamaTeacher: max_length={} not in [1, {}]", o.max_length(), model_->config().max_position_embeddings);
  if (o.token_budget() < o.max_length())
    fail_value("LlamaTeacher: token_budget={} must hold one caption of max_length={}", o.token_budget(), o.max_length());
  model_->eval();
}

std::shared_ptr<LlamaTeacher> LlamaTeacher::load(const std::filesystem::path& path, const std::filesystem::path& tokenizer,
                                                 LlamaTeacherOptions options) {
  std::filesystem::path tok = tokenizer;
  if (tok.empty()) tok = std::filesystem::is_directory(path) ? path : path.parent_path();
  return std::make_shared<LlamaTeacher>(Llama(LlamaImpl::load(path)), std::make_shared<LlamaTokenizer>(tok),
                                        std::move(options), checkpoint_fingerprint(path));
}

std::string LlamaTeacher::id() const {
  const auto& o = options_;
  return fmt::format("llama|{}|pooling={}|layer={}|max_length={}|bos={}|normalize={}|dtype={}", checkpoint_,
                     o.pooling(), o.layer(), o.max_length(), o.bos(), o.normalize(),
                     c10::toString(model_->model->embed_tokens->weight.scalar_type()));
}

at::Tensor LlamaTeacher::embed(const std::vector<std::string>& texts) {
  if (!tokenizer_) fail_value("LlamaTeacher: no tokenizer: embed token ids with embed_ids()");
  std::vector<std::vector<int64_t>> ids;
  ids.reserve(texts.size());
  for (const auto& text : texts) ids.push_back(tokenizer_->encode(text, options_.bos()));
  return embed_ids(ids);
}

at::Tensor LlamaTeacher::embed_ids(const std::vector<std::vector<int64_t>>& input) {
  at::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(input.size()), max_len = options_.max_length();
  at::Tensor out = at::empty({n, dim()}, at::kFloat);
  std::vector<int64_t> length(n);
  for (int64_t i = 0; i < n; ++i) {
    length[i] = std::min<int64_t>(static_cast<int64_t>(input[i].size()), max_len);
    if (length[i] == 0) fail_value("LlamaTeacher: caption {} has no tokens (bos=false and empty text?)", i);
  }
  // Longest first: similar lengths share a batch, so little compute goes to padding.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return length[a] > length[b]; });

  const auto device = model_->model->embed_tokens->weight.device();
  for (int64_t start = 0; start < n;) {
    const int64_t width = length[order[start]];  // the batch's longest caption
    const int64_t rows = std::min(n - start, std::max<int64_t>(1, options_.token_budget() / width));
    at::Tensor ids = at::zeros({rows, width}, at::kLong), mask = at::zeros({rows, width}, at::kLong);
    for (int64_t r = 0; r < rows; ++r) {
      const auto& src = input[order[start + r]];
      const int64_t len = length[order[start + r]];
      ids[r].narrow(0, 0, len).copy_(at::tensor(std::vector<int64_t>(src.begin(), src.begin() + len), at::kLong));
      mask[r].narrow(0, 0, len).fill_(1);
    }
    at::Tensor hidden = model_->hidden_states(ids.to(device), mask.to(device), options_.layer()).to(at::kFloat);
    at::Tensor m = mask.to(hidden.device()).to(at::kFloat).unsqueeze(2);
    at::Tensor pooled;
    if (options_.pooling() == "mean") {
      pooled = (hidden * m).sum(1) / m.sum(1);
    } else if (options_.pooling() == "first") {
      pooled = hidden.select(1, 0);
    } else {  // last real token
      at::Tensor last = (mask.sum(1) - 1).to(hidden.device());
      pooled = hidden.gather(1, last.view({rows, 1, 1}).expand({rows, 1, hidden.size(2)})).squeeze(1);
    }
    if (options_.normalize()) pooled = pooled / pooled.norm(2, {1}, true).clamp_min(1e-12);
    at::Tensor positions = at::tensor(std::vector<int64_t>(order.begin() + start, order.begin() + start + rows), at::kLong);
    out.index_copy_(0, positions, pooled.to(at::kCPU));
    start += rows;
  }
  return out;
}

}  // namespace kclip
