// Data sources and the loader: CSV parsing, brace expansion, epoch orders (deterministic, sharded like
// DistributedSampler), skipping unreadable samples, and resuming from a cursor.
#include "testing.h"

#include <kclip/data.h>
#include <kclip/error.h>

#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <set>

namespace {

using kclip::testing::TempDir;

// An in-memory data set: image i is a constant grey square of value i (so batches say which samples they hold);
// indices in `bad` have no decodable image.
class GreyDataset : public kclip::Dataset {
 public:
  GreyDataset(int64_t n, std::set<int64_t> bad = {}) : n_(n), bad_(std::move(bad)) {}
  int64_t size() const override { return n_; }
  kclip::Sample get(int64_t i) const override {
    kclip::Sample s;
    s.key = "grey" + std::to_string(i);
    s.caption = "caption " + std::to_string(i);
    if (bad_.count(i)) s.image_bytes = "not an image";
    else s.image = torch::full({8, 8}, static_cast<uint8_t>(i), torch::kByte);
    return s;
  }
  std::string describe() const override { return "grey squares"; }

 private:
  int64_t n_;
  std::set<int64_t> bad_;
};

std::shared_ptr<kclip::ClipTokenizer> tokenizer() {
  static auto t = std::make_shared<kclip::ClipTokenizer>();
  return t;
}

kclip::DataLoaderOptions small_options(int64_t batch) {
  kclip::ImageTransform t;
  t.size = 4;
  t.mean = {0, 0, 0};
  t.std = {1, 1, 1};
  return kclip::DataLoaderOptions().batch_size(batch).transform(t).context_length(8).workers(2);
}

// The sample index each image of a batch came from (pixel value × 255).
std::vector<int64_t> indices_of(const kclip::Batch& b) {
  auto v = (b.images.select(1, 0).select(1, 0).select(1, 0) * 255).round().to(torch::kLong);
  return std::vector<int64_t>(v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
}

std::vector<std::vector<int64_t>> epoch_batches(kclip::DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  while (auto b = loader.next()) out.push_back(indices_of(*b));
  return out;
}

}  // namespace

TEST_CASE("data: CSV rows, relative paths, keys, separators and malformed records") {
  TempDir dir;
  {
    std::ofstream(dir / "a.csv") << "filepath,title,extra\nimg/1.jpg,\"a dog, running\",x\n/abs/2.png,a cat,y\nshort\n";
  }
  kclip::CsvDataset csv(dir / "a.csv", kclip::CsvDatasetOptions());
  CHECK(csv.size() == 2);
  CHECK(csv.skipped_rows() == 1);
  CHECK(csv.get(0).image_path == dir.path() / "img/1.jpg");
  CHECK(csv.get(0).caption == "a dog, running");
  CHECK(csv.get(1).image_path == "/abs/2.png");
  CHECK_THROWS_WITH_AS(kclip::CsvDataset(dir / "a.csv", kclip::CsvDatasetOptions().bad_rows("error")),
                       doctest::Contains("record 4 has 1 fields"), kclip::Error);
  CHECK_THROWS_WITH_AS(kclip::CsvDataset(dir / "a.csv", kclip::CsvDatasetOptions().img_key("image")),
                       doctest::Contains("no column 'image' (--csv-img-key)"), kclip::Error);
  {
    std::ofstream(dir / "b.tsv") << "image\tcaption\nx.jpg\tone\n";
  }
  kclip::CsvDataset tsv(dir / "b.tsv", kclip::CsvDatasetOptions().img_key("image").caption_key("caption"));
  CHECK(tsv.get(0).caption == "one");
}

TEST_CASE("data: webdataset brace expansion") {
  CHECK(kclip::expand_braces("d/{00000..00002}.tar") ==
        std::vector<std::string>{"d/00000.tar", "d/00001.tar", "d/00002.tar"});
  CHECK(kclip::expand_braces("{a,b}-{1..2}.tar") == std::vector<std::string>{"a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar"});
  CHECK(kclip::expand_braces("x.tar::y.tar") == std::vector<std::string>{"x.tar", "y.tar"});
  CHECK_THROWS_AS(kclip::expand_braces("{3..1}.tar"), kclip::ValueError);
  CHECK_THROWS_AS(kclip::expand_braces("{1..2.tar"), kclip::ValueError);
}

TEST_CASE("data: epoch orders are deterministic, reshuffled per epoch, and shard like DistributedSampler") {
  auto data = std::make_shared<GreyDataset>(103);
  kclip::DataLoader one(data, small_options(10).seed(7), tokenizer());
  const auto order0 = one.epoch_order(0);
  CHECK(order0.size() == 103);
  CHECK(order0 == kclip::DataLoader(data, small_options(10).seed(7), tokenizer()).epoch_order(0));
  CHECK(order0 != one.epoch_order(1));
  CHECK(order0 != kclip::DataLoader(data, small_options(10).seed(8), tokenizer()).epoch_order(0));

  // Three ranks: disjoint, their union is the epoch minus the remainder, interleaved like DistributedSampler.
  std::vector<int64_t> all;
  for (int64_t r = 0; r < 3; ++r) {
    kclip::DataLoader rank(data, small_options(10).seed(7).rank(r).world_size(3), tokenizer());
    const auto mine = rank.epoch_order(0);
    CHECK(mine.size() == 34);
    for (size_t i = 0; i < mine.size(); ++i) CHECK(mine[i] == order0[i * 3 + static_cast<size_t>(r)]);
    all.insert(all.end(), mine.begin(), mine.end());
  }
  std::set<int64_t> unique(all.begin(), all.end());
  CHECK(unique.size() == all.size());
  CHECK(unique == std::set<int64_t>(order0.begin(), order0.begin() + 102));
}

TEST_CASE("data: the loader yields the epoch order in full batches, then ends the epoch") {
  auto data = std::make_shared<GreyDataset>(25);
  kclip::DataLoader loader(data, small_options(4).seed(3), tokenizer());
  CHECK(loader.batches_per_epoch() == 6);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto order = loader.epoch_order(epoch);
    const auto batches = epoch_batches(loader);
    REQUIRE(batches.size() == 6);
    for (size_t b = 0; b < batches.size(); ++b)
      CHECK(batches[b] == std::vector<int64_t>(order.begin() + b * 4, order.begin() + b * 4 + 4));
  }
  CHECK(loader.cursor().epoch == 2);

  kclip::DataLoader keep_last(data, small_options(4).seed(3).drop_last(false).shuffle(false), tokenizer());
  const auto batches = epoch_batches(keep_last);
  REQUIRE(batches.size() == 7);
  CHECK(batches.back() == std::vector<int64_t>{24});
}

TEST_CASE("data: unreadable images are skipped, counted, and the batch is filled from the next samples") {
  auto data = std::make_shared<GreyDataset>(20, std::set<int64_t>{2, 5});
  kclip::DataLoader loader(data, small_options(4).shuffle(false), tokenizer());
  const auto first = loader.next();
  REQUIRE(first);
  CHECK(indices_of(*first) == std::vector<int64_t>{0, 1, 3, 4});
  CHECK(first->skipped == 1);
  CHECK(indices_of(*loader.next()) == std::vector<int64_t>{6, 7, 8, 9});
  CHECK(loader.cursor().skipped == 2);
  CHECK(loader.cursor().position == 10);
  // 18 readable samples make 4 batches of 4, not the nominal 5.
  int64_t more = 0;
  while (loader.next()) ++more;
  CHECK(more == 2);

  kclip::DataLoader strict(data, small_options(4).shuffle(false).bad_samples("error"), tokenizer());
  CHECK_THROWS_WITH_AS(strict.next(), doctest::Contains("grey2"), kclip::Error);
}

TEST_CASE("data: a loader resumed from a cursor continues with the same batches") {
  auto data = std::make_shared<GreyDataset>(40, std::set<int64_t>{11});
  kclip::DataLoader full(data, small_options(6).seed(1), tokenizer());
  std::vector<std::vector<int64_t>> expected;
  for (int e = 0; e < 3; ++e)
    for (auto& b : epoch_batches(full)) expected.push_back(b);

  kclip::DataLoader first(data, small_options(6).seed(1), tokenizer());
  std::vector<std::vector<int64_t>> got;
  for (int i = 0; i < 8; ++i) {
    auto b = first.next();
    if (b) got.push_back(indices_of(*b));
  }
  const kclip::DataCursor cursor = first.cursor();
  kclip::DataLoader second(data, small_options(6).seed(1), tokenizer());
  second.seek(cursor);
  while (static_cast<int64_t>(got.size()) < static_cast<int64_t>(expected.size())) {
    auto b = second.next();
    if (b) got.push_back(indices_of(*b));
  }
  CHECK(got == expected);
  CHECK(second.cursor().skipped == 3);
}

// Images with structure (a ramp shifted by the index), so that different crops give different pixels.
class RampDataset : public kclip::Dataset {
 public:
  int64_t size() const override { return 12; }
  kclip::Sample get(int64_t i) const override {
    kclip::Sample s;
    s.key = "ramp" + std::to_string(i);
    s.caption = "caption " + std::to_string(i);
    auto y = torch::arange(24).view({24, 1}), x = torch::arange(32).view({1, 32});
    s.image = ((x * 7 + y * 3 + i) % 256).to(torch::kByte);
    return s;
  }
  std::string describe() const override { return "ramps"; }
};

TEST_CASE("data: random resized crops depend on the sample and epoch, not on the worker") {
  auto data = std::make_shared<RampDataset>();
  auto options = small_options(12).shuffle(false).workers(3);
  options.transform().random_resized_crop = true;
  options.transform().crop_scale = {0.3, 0.6};
  kclip::DataLoader a(data, options, tokenizer());
  kclip::DataLoader b(data, options.workers(1), tokenizer());
  auto a0 = a.next(), b0 = b.next();
  REQUIRE(a0);
  REQUIRE(b0);
  CHECK(torch::equal(a0->images, b0->images));
  CHECK(a0->text.sizes() == torch::IntArrayRef{12, 8});
  CHECK(a0->captions[3] == "caption 3");
  CHECK(!a.next());  // the end of epoch 0
  auto a1 = a.next();
  REQUIRE(a1);
  CHECK(!torch::equal(a0->images, a1->images));  // other crops in epoch 1

  options.transform().random_resized_crop = false;
  kclip::DataLoader center(data, options, tokenizer());
  auto c0 = center.next(), c1 = (center.next(), center.next());
  CHECK(torch::equal(c0->images, c1->images));  // the eval transform does not depend on the epoch
}
