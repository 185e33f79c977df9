// The trainer through the C++ API, end to end: a CSV of Flickr photos, teacher targets from an embedding cache
// built by a (small, random-weight) Llama teacher, concepts from K-means over it, all three loss terms, two
// decoding workers, checkpoints, metrics and a resume. Also the case ThreadSanitizer runs over the trainer's
// threads (scripts/test-tsan.sh): the data loader's workers, image decoding and AdamW's pass on every core.
#include "small_llama.h"
#include "testing.h"

#include <kclip/cluster.h>
#include <kclip/embedding_cache.h>
#include <kclip/error.h>
#include <kclip/train.h>

#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>

using kclip::testing::have_shared;
using kclip::testing::shared_dir;
using kclip::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// The first `rows` image-caption pairs of the shared Flickr8k sample, as a CSV with absolute image paths.
std::vector<std::string> write_pairs(const fs::path& csv, int64_t rows) {
  const fs::path flickr = shared_dir() / "data/flickr8k-1k";
  std::ifstream in(flickr / "captions.csv");
  std::ofstream out(csv);
  out << "filepath,title\n";
  std::string line;
  std::getline(in, line);  // header: image,caption
  std::vector<std::string> captions;
  while (static_cast<int64_t>(captions.size()) < rows && std::getline(in, line)) {
    const auto comma = line.find(',');
    std::string caption = line.substr(comma + 1);
    if (caption.find('"') != std::string::npos || caption.find(',') != std::string::npos) continue;  // plain rows only
    out << (flickr / "images" / line.substr(0, comma)).string() << ',' << caption << '\n';
    captions.push_back(caption);
  }
  return captions;
}

kclip::TrainConfig small_run(const fs::path& dir) {
  kclip::TrainConfig c;
  c.train_data = (dir / "pairs.csv").string();
  c.teacher_cache = (dir / "cache").string();
  c.concepts = (dir / "concepts.safetensors").string();
  c.model = "tiny";
  c.batch_size = 8;
  c.max_steps = 4;
  c.epochs = 10;
  c.lr = 1e-3;
  c.warmup = 1;
  c.workers = 2;
  c.logs = (dir / "logs").string();
  c.name = "run";
  c.save_every_n_steps = 2;
  c.progress = false;
  c.seed = 1;
  return c;
}

std::map<std::string, torch::Tensor> weights(kclip::Trainer& t) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : t.model()->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

}  // namespace

TEST_CASE("train: a C++ Trainer fits a CSV with all three loss terms, checkpoints, and resumes to the same weights") {
  if (!have_shared("data/flickr8k-1k/captions.csv") || !have_shared("models/stories15M/tokenizer.bin")) return;
  TempDir dir;
  const auto captions = write_pairs(dir / "pairs.csv", 48);
  REQUIRE(captions.size() == 48);
  auto tokenizer = std::make_shared<kclip::LlamaTokenizer>(shared_dir() / "models/stories15M/tokenizer.bin");
  kclip::LlamaTeacher teacher(kclip::testing::small_random_llama(), tokenizer,
                              kclip::LlamaTeacherOptions().max_length(64), "small");
  const auto cache = kclip::EmbeddingCache::build(dir / "cache", teacher, captions,
                                                  kclip::EmbeddingCacheOptions().dtype("F32").progress(false));
  kclip::KMeans kmeans(kclip::KMeansOptions(4).seed(0));
  kmeans.fit(cache.get(captions));
  kmeans.save(dir / "concepts.safetensors", {{"teacher_id", cache.teacher_id()}});

  kclip::Trainer trainer(small_run(dir.path()));
  const kclip::StepResult last = trainer.fit();
  CHECK(last.step == 4);
  CHECK(trainer.step() == 4);
  for (double term : {last.loss, last.contrastive, last.distillation, last.concept}) CHECK(std::isfinite(term));
  CHECK(last.loss == doctest::Approx(last.contrastive + last.distillation + 0.01 * last.concept).epsilon(1e-4));
  CHECK(fs::exists(trainer.checkpoint_dir() / "step_00000002"));
  CHECK(fs::exists(trainer.checkpoint_dir() / "step_00000004"));
  std::ifstream metrics(trainer.run_dir() / "metrics.jsonl");
  int64_t records = 0;
  for (std::string line; std::getline(metrics, line);) records += line.find("\"type\":\"train\"") != std::string::npos;
  CHECK(records == 4);  // one record a step

  // A second trainer resumed from step 2 takes the same two steps: the same weights at step 4.
  const auto expected = weights(trainer);
  kclip::TrainConfig again = small_run(dir.path());
  again.name = "resumed";
  again.resume = (trainer.checkpoint_dir() / "step_00000002").string();
  kclip::Trainer resumed(again);
  CHECK(resumed.fit().step == 4);
  const auto got = weights(resumed);
  REQUIRE(got.size() == expected.size());
  for (const auto& [name, value] : expected) CHECK_MESSAGE(torch::equal(got.at(name), value), name);
}
