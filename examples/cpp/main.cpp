// Saves a small torch::nn model's parameters as safetensors with kclip, loads them back into a fresh model,
// and checks both models compute the same thing; then preprocesses an image and tokenizes a caption for CLIP, and
// takes three steps of kclip's trainer (contrastive term only) on a random batch.
// With a path argument it lists that checkpoint instead.
//
//   kclip_example                    # round trip in a temporary directory
//   kclip_example model.safetensors  # list a checkpoint (file, index or directory)
#include <kclip/kclip.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

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
  return same && losses.back() < losses.front() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kclip_example: %s\n", e.what());
  return 2;
}
