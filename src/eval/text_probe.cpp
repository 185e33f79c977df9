// The text-encoder reconstruction probe (Kamath et al., EMNLP 2023): a frozen encoder's caption vector is mapped
// by a linear layer + LayerNorm into a small causal Transformer decoder, as the first positions of its sequence,
// and the decoder is trained to regenerate the caption's CLIP BPE tokens. The score is how often greedy decoding
// gives the caption back exactly on held-out captions: what the vector kept of the text.
#include <kclip/error.h>
#include <kclip/eval.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (in ranges.h since fmt 11)
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <limits>
#include <random>
#include <unordered_map>

namespace kclip {
namespace {

constexpr int64_t kBos = 0, kEos = 1, kUnknown = 2, kFirstToken = 3;

// [encoding as P prefix vectors, BOS, t1, ..., tn] → the next token after each of BOS, t1, ..., tn.
class ProbeDecoderImpl : public torch::nn::Module {
 public:
  ProbeDecoderImpl(int64_t vocabulary, int64_t width, int64_t layers, int64_t heads, int64_t positions) {
    token = register_module("token", torch::nn::Embedding(vocabulary, width));
    position = register_parameter("position", at::randn({positions, width}) * 0.01);
    blocks = register_module("blocks", CLIPTransformer(width, layers, heads, "gelu"));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    head = register_module("head", torch::nn::Linear(width, vocabulary));
    mask = at::full({positions, positions}, -std::numeric_limits<float>::infinity()).triu(1);
  }
  // prefix [B, P, width], tokens [B, T] starting with BOS → logits [B, T, vocabulary].
  at::Tensor forward(const at::Tensor& prefix, const at::Tensor& tokens) {
    const int64_t p = prefix.size(1), t = tokens.size(1) + p;
    at::Tensor x = at::cat({prefix, token->forward(tokens)}, 1) + position.narrow(0, 0, t);
    x = blocks->forward(x, mask.narrow(0, 0, t).narrow(1, 0, t).contiguous());  // contiguous: the fused attention
    return head->forward(norm->forward(x.narrow(1, p, t - p)));
  }
  torch::nn::Embedding token{nullptr};
  at::Tensor position, mask;
  CLIPTransformer blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(ProbeDecoder);

}  // namespace

struct TextProbe::Impl {
  ClipTokenizer tokenizer;
  TextProbeOptions options;
  std::unordered_map<int64_t, int64_t> local;  // CLIP BPE id -> probe vocabulary id
  std::vector<int64_t> global;                 // probe id -> CLIP BPE id (-1 for BOS / EOS / unknown)
  torch::nn::Linear map{nullptr};
  torch::nn::LayerNorm map_norm{nullptr};
  ProbeDecoder decoder{nullptr};

  Impl(const ClipTokenizer& t, TextProbeOptions o) : tokenizer(t), options(std::move(o)) {}

  std::vector<int64_t> tokens_of(const std::string& caption) const {
    std::vector<int64_t> ids = tokenizer.encode(caption);
    if (static_cast<int64_t>(ids.size()) > options.max_tokens()) ids.resize(static_cast<size_t>(options.max_tokens()));
    for (auto& id : ids) {
      auto it = local.find(id);
      id = it == local.end() ? kUnknown : it->second;
    }
    return ids;
  }

  at::Tensor prefix(const at::Tensor& encodings) {
    return map_norm->forward(map->forward(encodings).view({encodings.size(0), options.prefix_tokens(), options.width()}));
  }

  // Teacher forcing: inputs [BOS, t1..tn, pad...], targets [t1..tn, EOS, ignored...].
  std::pair<at::Tensor, at::Tensor> batch(const std::vector<std::vector<int64_t>>& captions) const {
    const int64_t n = static_cast<int64_t>(captions.size()), t = options.max_tokens() + 1;
    at::Tensor inputs = at::full({n, t}, kEos, at::kLong), targets = at::full({n, t}, -100, at::kLong);
    for (int64_t i = 0; i < n; ++i) {
      const auto& c = captions[static_cast<size_t>(i)];
      inputs[i][0] = kBos;
      for (size_t j = 0; j < c.size(); ++j) {
        inputs[i][static_cast<int64_t>(j) + 1] = c[j];
        targets[i][static_cast<int64_t>(j)] = c[j];
      }
      targets[i][static_cast<int64_t>(c.size())] = kEos;
    }
    return {inputs, targets};
  }

  void train(const at::Tensor& encodings, const std::vector<std::vector<int64_t>>& captions) {
    std::vector<at::Tensor> params = map->parameters();
    for (auto& p : map_norm->parameters()) params.push_back(p);
    if (!options.freeze_decoder())
      for (auto& p : decoder->parameters()) params.push_back(p);
    torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(options.lr()).weight_decay(0.01));
    std::vector<int64_t> order(captions.size());
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(options.seed());
    map->train();
    decoder->train();
    at::AutoGradMode grad(true);
    for (int64_t epoch = 0; epoch < options.epochs(); ++epoch) {
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
      for (size_t start = 0; start < order.size(); start += static_cast<size_t>(options.batch_size())) {
        const size_t end = std::min(order.size(), start + static_cast<size_t>(options.batch_size()));
        std::vector<int64_t> rows(order.begin() + static_cast<int64_t>(start), order.begin() + static_cast<int64_t>(end));
        std::vector<std::vector<int64_t>> chunk;
        for (int64_t r : rows) chunk.push_back(captions[static_cast<size_t>(r)]);
        auto [inputs, targets] = batch(chunk);
        const at::Tensor logits = decoder->forward(prefix(encodings.index_select(0, at::tensor(rows, at::kLong))), inputs);
        const at::Tensor loss = torch::nn::functional::cross_entropy(
            logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}),
            torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
      }
    }
  }

  // Greedy decoding, all rows at once, until every row has produced EOS or max_tokens tokens.
  std::vector<std::vector<int64_t>> greedy(const at::Tensor& encodings) {
    at::NoGradGuard no_grad;
    map->eval();
    decoder->eval();
    std::vector<std::vector<int64_t>> out;
    for (int64_t start = 0; start < encodings.size(0); start += 256) {
      const int64_t n = std::min<int64_t>(256, encodings.size(0) - start);
      const at::Tensor p = prefix(encodings.narrow(0, start, n));
      at::Tensor tokens = at::full({n, 1}, kBos, at::kLong);
      std::vector<std::vector<int64_t>> rows(static_cast<size_t>(n));
      std::vector<bool> done(static_cast<size_t>(n), false);
      for (int64_t step = 0; step <= options.max_tokens(); ++step) {
        at::Tensor next = decoder->forward(p, tokens).select(1, step);
        next.select(1, kBos).fill_(-std::numeric_limits<float>::infinity());
        const at::Tensor chosen = next.argmax(1);
        const auto* c = chosen.data_ptr<int64_t>();
        bool all = true;
        for (int64_t i = 0; i < n; ++i) {
          if (!done[static_cast<size_t>(i)]) {
            if (c[i] == kEos || step == options.max_tokens()) done[static_cast<size_t>(i)] = true;
            else rows[static_cast<size_t>(i)].push_back(c[i]);
          }
          all = all && done[static_cast<size_t>(i)];
        }
        if (all) break;
        tokens = at::cat({tokens, chosen.unsqueeze(1)}, 1);
      }
      out.insert(out.end(), rows.begin(), rows.end());
    }
    return out;
  }

  std::string text_of(const std::vector<int64_t>& ids) const {
    std::vector<int64_t> bpe;
    for (int64_t id : ids)
      if (id >= kFirstToken) bpe.push_back(global[static_cast<size_t>(id)]);
    std::string text = tokenizer.decode(bpe);
    while (!text.empty() && text.back() == ' ') text.pop_back();
    return text;
  }
};

TextProbe::TextProbe(const ClipTokenizer& tokenizer, const std::vector<std::string>& train_captions, int64_t encoder_dim,
                     TextProbeOptions options)
    : impl_(std::make_shared<Impl>(tokenizer, std::move(options))) {
  const auto& o = impl_->options;
  if (train_captions.empty()) fail_value("TextProbe: no training captions");
  if (o.width() < 1 || o.heads() < 1 || o.width() % o.heads() != 0 || o.layers() < 1 || o.max_tokens() < 1 ||
      o.prefix_tokens() < 1 || o.epochs() < 1 ||
      o.batch_size() < 1 || !(o.lr() > 0))
    fail_value("TextProbe: width must split into heads; layers, max_tokens, epochs, batch_size and lr must be positive");
  impl_->global = {-1, -1, -1};
  for (const auto& caption : train_captions)
    for (int64_t id : impl_->tokenizer.encode(caption))
      if (impl_->local.emplace(id, static_cast<int64_t>(impl_->global.size())).second) impl_->global.push_back(id);
  const int64_t vocabulary = static_cast<int64_t>(impl_->global.size());
  impl_->decoder = ProbeDecoder(vocabulary, o.width(), o.layers(), o.heads(), o.max_tokens() + 1 + o.prefix_tokens());
  reset_map(encoder_dim);
}

void TextProbe::reset_map(int64_t encoder_dim) {
  if (encoder_dim < 1) fail_value("TextProbe: encoder dimension {} must be positive", encoder_dim);
  impl_->map = torch::nn::Linear(encoder_dim, impl_->options.prefix_tokens() * impl_->options.width());
  impl_->map_norm = torch::nn::LayerNorm(torch::nn::LayerNormOptions({impl_->options.width()}));
}

std::vector<std::string> TextProbe::decode(const at::Tensor& encodings) {
  std::vector<std::string> texts;
  for (const auto& ids : impl_->greedy(encodings.to(at::kCPU, at::kFloat))) texts.push_back(impl_->text_of(ids));
  return texts;
}

namespace {

at::Tensor encode_all(const TextEncoder& encoder, const std::vector<std::string>& captions, int64_t dim) {
  std::vector<at::Tensor> parts;
  for (size_t start = 0; start < captions.size(); start += 256) {
    const std::vector<std::string> chunk(captions.begin() + static_cast<int64_t>(start),
                                         captions.begin() + static_cast<int64_t>(std::min(captions.size(), start + 256)));
    at::Tensor e = encoder(chunk);
    if (!e.defined() || e.dim() != 2 || e.size(0) != static_cast<int64_t>(chunk.size()) || e.size(1) != dim)
      fail_value("text probe: the encoder returned {} for {} captions: expected [{}, {}]",
                 e.defined() ? fmt::format("[{}]", fmt::join(e.sizes(), ", ")) : "nothing", chunk.size(), chunk.size(), dim);
    parts.push_back(e.detach().to(at::kCPU, at::kFloat));
  }
  return at::cat(parts);
}

// (exact matches, correct tokens, tokens) of decoded rows against references (EOS counts as a token; a reference
// holding an unknown token cannot be matched).
std::array<int64_t, 3> score(const std::vector<std::vector<int64_t>>& decoded, const std::vector<std::vector<int64_t>>& reference) {
  std::array<int64_t, 3> s{0, 0, 0};
  for (size_t i = 0; i < reference.size(); ++i) {
    std::vector<int64_t> ref = reference[i], got = decoded[i];
    const bool unknown = std::find(ref.begin(), ref.end(), kUnknown) != ref.end();
    s[0] += !unknown && got == ref;
    ref.push_back(kEos);
    got.push_back(kEos);
    for (size_t j = 0; j < ref.size(); ++j) s[1] += j < got.size() && got[j] == ref[j] && ref[j] != kUnknown;
    s[2] += static_cast<int64_t>(ref.size());
  }
  return s;
}

}  // namespace

TextProbeResult TextProbe::run(const TextEncoder& encoder, const std::vector<std::string>& train_captions,
                               const std::vector<std::string>& test_captions) {
  if (train_captions.empty() || test_captions.empty()) fail_value("TextProbe.run: needs training and test captions");
  const int64_t dim = impl_->map->options.in_features();
  const at::Tensor train_x = encode_all(encoder, train_captions, dim), test_x = encode_all(encoder, test_captions, dim);
  std::vector<std::vector<int64_t>> train_ids, test_ids;
  for (const auto& c : train_captions) train_ids.push_back(impl_->tokens_of(c));
  for (const auto& c : test_captions) test_ids.push_back(impl_->tokens_of(c));
  torch::manual_seed(impl_->options.seed());
  impl_->train(train_x, train_ids);

  TextProbeResult r;
  r.train = static_cast<int64_t>(train_captions.size());
  r.test = static_cast<int64_t>(test_captions.size());
  r.vocabulary = static_cast<int64_t>(impl_->global.size());
  const auto decoded = impl_->greedy(test_x);
  const auto test_score = score(decoded, test_ids);
  r.exact_match = static_cast<double>(test_score[0]) / static_cast<double>(r.test);
  r.token_accuracy = static_cast<double>(test_score[1]) / static_cast<double>(test_score[2]);
  const auto train_score = score(impl_->greedy(train_x), train_ids);
  r.train_exact_match = static_cast<double>(train_score[0]) / static_cast<double>(r.train);
  for (size_t i = 0; i < std::min<size_t>(5, decoded.size()); ++i)
    r.examples.emplace_back(test_captions[i], impl_->text_of(decoded[i]));
  return r;
}

std::pair<std::vector<std::string>, std::vector<std::string>> split_captions(const std::vector<std::string>& captions,
                                                                             double test_fraction) {
  if (!(test_fraction > 0 && test_fraction < 1)) fail_value("split_captions: test_fraction {} must lie in (0, 1)", test_fraction);
  std::pair<std::vector<std::string>, std::vector<std::string>> split;
  const auto threshold = static_cast<uint64_t>(test_fraction * 10000);
  for (const auto& c : captions) (caption_hash(c) % 10000 < threshold ? split.second : split.first).push_back(c);
  return split;
}

TextEncoder clip_text_encoder(CLIP& model, const ClipTokenizer& tokenizer) {
  return [&model, &tokenizer](const std::vector<std::string>& texts) { return encode_texts(model, tokenizer, texts); };
}

}  // namespace kclip
