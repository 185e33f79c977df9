// Saves a small torch::nn model's parameters as safetensors with kclip, loads them back into a fresh model,
// and checks both models compute the same thing; then preprocesses an image and tokenizes a caption for CLIP, and
// takes three steps of kclip's trainer (contrastive term only) on a random batch. Last, the whole method through
// the API on Fashion-MNIST (Debian's dataset-fashion-mnist) when it is installed: a teacher written in C++ embeds the
// captions into a cache, K-means makes concepts, the trainer trains a tiny student with all three loss terms, and
// evaluate_all scores it (zero-shot). With a path argument it lists that checkpoint instead.
//
//   kclip_example                    # round trip in a temporary directory
//   kclip_example model.safetensors  # list a checkpoint (file, index or directory)
#include <kclip/kclip.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

// A teacher is anything that embeds texts: here letter counts (a Llama would be kclip::LlamaTeacher::load(path)).
class LetterTeacher : public kclip::Teacher {
 public:
  at::Tensor embed(const std::vector<std::string>& texts) override {
    at::Tensor out = torch::zeros({static_cast<int64_t>(texts.size()), 26});
    for (size_t i = 0; i < texts.size(); ++i)
      for (char c : texts[i])
        if (c >= 'a' && c <= 'z') out[static_cast<int64_t>(i)][c - 'a'] += 1;
    return out;
  }
  int64_t dim() const override { return 26; }
  std::string id() const override { return "letters"; }
};

// embed -> cluster -> train -> eval on Fashion-MNIST; returns the zero-shot top-1 (or -1 without the data set).
double knowledge_clip_on_fashion_mnist(const std::filesystem::path& work) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") ||
      !std::filesystem::exists(kclip::ClipTokenizer::default_vocab_path()))
    return -1;
  const auto templates = kclip::caption_templates("openai-cifar10");
  const kclip::DataSource data = kclip::open_data_source("fashion-mnist", kclip::DataSourceOptions().templates(templates));
  LetterTeacher teacher;
  auto cache = kclip::EmbeddingCache::build(work / "cache", teacher, data.dataset->captions(),
                                            kclip::EmbeddingCacheOptions().progress(false));
  kclip::KMeans concepts(kclip::KMeansOptions(10).iters(20));
  std::vector<std::string> captions = data.dataset->captions();
  std::sort(captions.begin(), captions.end());
  captions.erase(std::unique(captions.begin(), captions.end()), captions.end());
  concepts.fit(cache.get(captions)).save(work / "concepts.safetensors", {{"teacher_id", cache.teacher_id()}});

  kclip::TrainConfig config;
  config.train_data = "fashion-mnist";
  config.templates = "openai-cifar10";
  config.model = "tiny";
  config.teacher_cache = (work / "cache").string();
  config.concepts = (work / "concepts.safetensors").string();
  config.alpha = 1, config.beta = 0.01, config.gamma = 1;  // the paper's weights
  config.batch_size = 32, config.max_steps = 10, config.warmup = 2, config.lr = 1e-3;
  config.logs = (work / "runs").string(), config.name = "fashion", config.progress = false;
  kclip::Trainer trainer(config);
  const kclip::StepResult last = trainer.fit();
  const auto checkpoint = kclip::latest_checkpoint(work / "runs" / "fashion" / "checkpoints");
  kclip::CLIP student(kclip::CLIPImpl::load(checkpoint / "model.safetensors"));
  const kclip::DataSource test =
      kclip::open_data_source("fashion-mnist", kclip::DataSourceOptions().templates(templates).split("test"));
  const double top1 = kclip::evaluate_zeroshot(student, kclip::ClipTokenizer(), test.dataset, templates).top1;
  std::printf("Knowledge-CLIP on Fashion-MNIST: %zu captions embedded, 10 concepts, %lld steps (loss %.4f), "
              "zero-shot top-1 %.3f\n", captions.size(), static_cast<long long>(trainer.step()), last.loss, top1);
  return top1;
}

int main(int argc, char** argv) try {
  if (argc > 1) {
    for (const auto& item : kclip::load_safetensors(argv[1]))
      std::printf("%s %s\n", item.key().c_str(), item.value().sizes().vec().size() ? c10::str(item.value().sizes()).c_str() : "[]");
    return 0;
  }
  torch::manual_seed(0);
  torch::nn::Sequential saved(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 4));
  const auto path = std::filesystem::temp_directory_path() / "kclip_example.safetensors";
  kclip::save_safetensors(path, saved->named_parameters(), {{"format", "pt"}, {"producer", "kclip_example"}});

  torch::nn::Sequential restored(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 4));
  kclip::TensorDict loaded = kclip::load_safetensors(path);
  torch::NoGradGuard no_grad;
  for (auto& param : restored->named_parameters()) param.value().copy_(loaded[param.key()]);

  torch::Tensor x = torch::randn({3, 8});
  const bool same = torch::equal(saved->forward(x), restored->forward(x));
  std::printf("kclip %s: saved %zu tensors to %s, reloaded: outputs %s (threads %d)\n", kclip::version(),
              loaded.size(), path.c_str(), same ? "match" : "DIFFER", kclip::num_threads());
  std::filesystem::remove(path);

  // CLIP's preprocessing of a generated grey image, and its tokenizer when the vocabulary is in place.
  const torch::Tensor pixels = kclip::ImageTransform{32}(torch::full({3, 40, 60}, 128, torch::kByte));
  std::printf("CLIP pixels [3, 32, 32]: mean %.4f\n", pixels.mean().item<double>());
  if (std::filesystem::exists(kclip::ClipTokenizer::default_vocab_path())) {
    const torch::Tensor ids = kclip::ClipTokenizer()({"a photo of a cat"}, 8);
    std::printf("CLIP tokens of 'a photo of a cat': %s\n", c10::str(ids[0]).c_str());
  }

  // The trainer's custom-loop entry: train_step on batches from anywhere (here one random batch, three times).
  kclip::TrainConfig config;
  config.model = "tiny";                 // configs/tiny.json, installed with the package
  config.alpha = config.beta = 0;        // contrastive only: no teacher needed
  config.max_steps = 3;
  config.warmup = 1;
  config.logs = (std::filesystem::temp_directory_path() / "kclip_example_runs").string();
  config.progress = false;
  kclip::Trainer trainer(config);
  torch::Tensor images = torch::randn({8, 3, 64, 64}), text = torch::zeros({8, 77}, torch::kLong);
  text.select(1, 0).fill_(49406);
  text.slice(1, 1, 4).copy_(torch::randint(1, 40000, {8, 3}));
  text.select(1, 4).fill_(49407);
  std::vector<double> losses;
  for (int i = 0; i < 3; ++i) losses.push_back(trainer.train_step(images, text).loss);
  std::printf("Trainer: 3 steps, loss %.4f -> %.4f\n", losses.front(), losses.back());

  const auto work = std::filesystem::temp_directory_path() / "kclip_example_pipeline";
  std::filesystem::remove_all(work);
  const double top1 = knowledge_clip_on_fashion_mnist(work);
  std::filesystem::remove_all(work);
  const bool pipeline_ok = top1 < 0 || (top1 > 0 && top1 <= 1);  // -1: data set or vocabulary not installed
  return same && losses.back() < losses.front() && pipeline_ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kclip_example: %s\n", e.what());
  return 2;
}
